"""Per-distance counts of 256 database items at a time from their bit-planes, for exact mAP on CPUs without a
vector popcount (eval/metrics.py's bit-sliced scan). Imports only eval/planes.py (the layout and the counter).

    P, sel = bit_planes(db_codes), query_select(q_codes, bits)   # eval/planes.py
    planes_hist(P, g, sel[i], acc, rel, slot, reld, relp)   # in numba, group g of query i:
        acc [HIST_BINS * LANES] += the group's per-distance counts (acc[d * LANES + l]: lane l's items at d);
        rel [LANES]: the group's relevant items (bit t of rel[l] = item 256 g + 64 l + t): the r-th of them in
        index order, at distance reld[slot + r] (the caller's), gets relp[slot + r] = the earlier items at it

How: selected_counts gives the group's distances in binary (9 bit-planes); a tree of masks splits the 256
items by the count bits, most significant first (mask & ~count[k], mask & count[k]); subtrees of 16+ values
are tested and skipped when empty, so a group costs about its distinct distances (concentrated on trained
codes), and each 8-value block (queued, then run by one loop) goes branch-free down to its leaves, whose vector
popcount (VPSHUFB nibble lookups + VPSADBW on AVX2) adds to acc. Measured (1e6 codes, 1 thread, AVX2 Zen 3,
cycles per item at 64 / 128 / 256 bits): counting 0.43 / 0.77 / 1.21, the tree 0.40 / 0.75 / 1.13, placing
the relevant items (1% of the database) ~0.2 (with the caller's masks and ranks around it, 0.5-0.7).
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from eval.planes import COUNT_BITS, I32, I64, LANES, MAX_BITS, VEC, int64_vector, loop_close, loop_open, \
    selected_counts, splat, uint64_arrays

BLOCK_BITS = 3  # 8-value blocks: tested as a whole, then branch-free (a mispredicted test costs more than a
# few empty lookups; 4- and 16-value blocks measured slower)
HIST_BINS = ((MAX_BITS >> BLOCK_BITS) + 1) << BLOCK_BITS  # acc: an entry (LANES counts) per distance, whole blocks
ZERO, ONES = ir.Constant(VEC, [0] * LANES), ir.Constant(VEC, [-1] * LANES)


def _vector_ctpop(builder):
    name = "llvm.ctpop.v%di64" % LANES
    return builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(VEC, [VEC]), name=name)


def _nonzero(builder, v):
    wide = builder.bitcast(v, ir.IntType(64 * LANES))
    return builder.icmp_unsigned("!=", wide, ir.Constant(wide.type, 0))


def _hsum(builder, v):
    r = builder.extract_element(v, ir.Constant(I32, 0))
    for k in range(1, v.type.count):
        r = builder.add(r, builder.extract_element(v, ir.Constant(I32, k)))
    return r


def _acc_ptr(builder, ctx, value):
    return builder.bitcast(builder.gep(ctx["acc"], [value]), VEC.as_pointer())


def _leaves(builder, mask, count, k, base, low, ctx):
    """acc[v] += popcount of mask's items at each value v = base + low + [0, 2^(k+1)), branch-free (base: run
    time)."""
    if k < 0:
        at = builder.mul(builder.add(base, ir.Constant(I64, low)), ir.Constant(I64, LANES))
        ptr = _acc_ptr(builder, ctx, at)
        builder.store(builder.add(builder.load(ptr, align=8), builder.call(_vector_ctpop(builder), [mask])), ptr,
                      align=8)
        return
    for bit in (0, 1):
        _leaves(builder, builder.and_(mask, count[k] if bit else builder.xor(count[k], ONES)), count, k - 1, base,
                low | (bit << k), ctx)


def _blocks(builder, count, ctx):
    """Count the blocks _split queued, with one copy of the block code (a copy per block: the same speed, in
    one process interleaved, and 8 s more to compile: 24 vs 16 s for the metrics kernels)."""
    work = ctx["work"]
    n = builder.load(work["n"])
    i, _, loop, done = loop_open(builder, n, "blocks")
    mask = builder.load(builder.gep(work["masks"], [ir.Constant(I64, 0), i]), align=8)
    base = builder.load(builder.gep(work["prefix"], [ir.Constant(I64, 0), i]))
    _leaves(builder, mask, count, BLOCK_BITS - 1, base, 0, ctx)
    loop_close(builder, i, 1, n, loop, done)


def _relevant(builder, count, ctx):
    """After the group is counted: each relevant item (ascending) at distance d = reld[slot] (the caller's)
    gets relp[slot] = the earlier items at d = acc[d] (now including this group) - the group's items at d from
    it on (the mask of items at d, rebuilt from the counts: keeping every leaf's mask cost 15% in stores).
    Branch-free but for the loop over the set bits of rel: a test per lane cost a mispredict each."""
    i256 = ir.IntType(64 * LANES)
    zero = ir.Constant(i256, 0)
    rb0 = builder.bitcast(ctx["rel"], i256)
    with builder.if_then(builder.icmp_unsigned("!=", rb0, zero)):
        head = builder.block
        loop, done = builder.append_basic_block("rel.loop"), builder.append_basic_block("rel.done")
        builder.branch(loop)
        builder.position_at_end(loop)
        rb, slot = builder.phi(i256), builder.phi(I64)
        rb.add_incoming(rb0, head)
        slot.add_incoming(ctx["slot"], head)
        low = builder.and_(rb, builder.sub(zero, rb))  # the item's bit
        after = builder.bitcast(builder.sub(zero, low), VEC)  # it and every later item of the group
        d = builder.load(builder.gep(ctx["reld"], [slot]))
        dv, leaf = splat(builder, d), ONES  # leaf: the group's items at d
        for k in range(COUNT_BITS):  # count[k], or its complement where bit k of d is 0 (vector compares, not a
            # scalar bit broadcast per k: 3-7% of the whole scan)
            clear = builder.sext(builder.icmp_unsigned("==", builder.and_(dv, ir.Constant(VEC, [1 << k] * LANES)),
                                                       ZERO), VEC)
            leaf = builder.and_(leaf, builder.xor(count[k], clear))
        accd = _acc_ptr(builder, ctx, builder.mul(d, ir.Constant(I64, LANES)))
        seen = _hsum(builder, builder.sub(builder.load(accd, align=8),
                                          builder.call(_vector_ctpop(builder), [builder.and_(leaf, after)])))
        builder.store(seen, builder.gep(ctx["relp"], [slot]))
        nrb = builder.xor(rb, low)
        rb.add_incoming(nrb, builder.block)
        slot.add_incoming(builder.add(slot, ir.Constant(I64, 1)), builder.block)
        builder.cbranch(builder.icmp_unsigned("!=", nrb, zero), loop, done)
        builder.position_at_end(done)


def _split(builder, mask, count, k, prefix, ctx):
    """Count mask's items, whose values are prefix + [0, 2^(k+1)), by the count bits k, k - 1, ..."""
    if k < BLOCK_BITS:  # a block of 2^BLOCK_BITS values: queued for _blocks
        work = ctx["work"]
        n = builder.load(work["n"])
        builder.store(mask, builder.gep(work["masks"], [ir.Constant(I64, 0), n]), align=8)
        builder.store(ir.Constant(I64, prefix), builder.gep(work["prefix"], [ir.Constant(I64, 0), n]))
        builder.store(builder.add(n, ir.Constant(I64, 1)), work["n"])
        return
    for bit in (0, 1):
        lo = prefix | (bit << k)
        if lo > MAX_BITS:
            continue
        child = builder.and_(mask, count[k] if bit else builder.xor(count[k], ONES))
        with builder.if_then(_nonzero(builder, child)):
            _split(builder, child, count, k - 1, lo, ctx)


@intrinsic
def planes_hist(typingctx, P, g, sel, acc, rel, slot, reld, relp):
    """See the module docstring."""
    if not (uint64_arrays((P, acc, rel), (3, 1, 1)) and all(int64_vector(a) for a in (sel, reld, relp))):
        return None
    sig = types.none(P, types.int64, sel, acc, rel, types.int64, reld, relp)

    def codegen(context, builder, signature, args):
        arr = {i: context.make_array(signature.args[i])(context, builder, args[i]) for i in (0, 2, 3, 4, 6, 7)}
        count = selected_counts(builder, arr[0], arr[2], args[1])
        relv = builder.load(builder.bitcast(arr[4].data, VEC.as_pointer()), align=8)
        ctx = dict(acc=arr[3].data, rel=relv, slot=args[5], reld=arr[6].data, relp=arr[7].data)
        nblocks = (MAX_BITS >> BLOCK_BITS) + 1
        ctx["work"] = dict(n=cgutils.alloca_once_value(builder, ir.Constant(I64, 0)),
                           masks=cgutils.alloca_once(builder, ir.ArrayType(VEC, nblocks)),
                           prefix=cgutils.alloca_once(builder, ir.ArrayType(I64, nblocks)))
        _split(builder, ONES, count, COUNT_BITS - 1, 0, ctx)
        _blocks(builder, count, ctx)
        _relevant(builder, count, ctx)
        return context.get_dummy_value()
    return sig, codegen
