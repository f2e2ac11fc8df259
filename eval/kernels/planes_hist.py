"""Per-distance counts of a group of database items (GROUP: 256 on AVX2, 512 on AVX-512) from their bit-planes,
for exact mAP (eval/metrics/exact.py's bit-sliced scan). Imports only eval/kernels/planes.py (the layout and the
counter).

    P, plan = bit_planes(db_codes), plan_queries(q_codes, bits, qblock)   # eval/kernels/planes.py, planes_select.py
    p = planes_hist(P, g, plan.rows[i], A, ai, acc, jl, p, reld, relp)   # in numba, group g of query i
        (A[ai]: its anchor's distances for group g from planes_dist, when its row is relative):
        acc [HIST_BINS] += the group's per-distance counts (acc[d]: its items at distance d);
        jl: the query's relevant database indices, ascending; those of group g from jl[p] on, at distances
        reld[p], ... (the caller's), get relp[p], ... = the earlier items at their distance; returns the next p

How: selected_counts gives the group's distances in binary (9 bit-planes); a tree of masks splits the group's
items other than the relevant ones by the count bits, most significant first (mask & ~count[k],
mask & count[k]); subtrees of 16+ values are tested and skipped when empty, so a group costs about its
distinct distances (concentrated on trained codes); each 8-value block (queued, then run by one loop) is split
branch-free by one AND a value with the group's 8 masks of the 3 low count bits, and each leaf's vector
popcount (VPSHUFB nibble lookups + VPSADBW on AVX2, VPOPCNTQ on AVX-512) adds to acc. The relevant items (a query's
own class: on trained codes its near items, whose sparse blocks would cost a popcount per distance and mispredicted
tests) are counted one by one in index order: an item's earlier, equal-distance items are acc[d] - popcount(leaf &
FROM[t]) (its block's mask & the low mask of its distance, the items from it on: computed), then
acc[d] counts it. Why: the near items lie several standard deviations below the rest, so inside the tree they
cost sparse low-distance blocks and mispredicted tests; the cycle counts behind this choice (and the per-group
bit-mask variant that lost) are in bench/results/kernels-history-2026-12-06.md.
"""
from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

from c3dhash.eval.kernels.isa import INTRINSIC_CTPOP_VEC, INTRINSIC_REDUCE_ADD
from c3dhash.eval.kernels.planes import COUNT_BITS, GROUP, I32, I64, LANES, MAX_BITS, VEC, arrays, int64_vector, \
    loop_close, loop_open, row_vector, selected_counts, splat, uint64_arrays

BLOCK_BITS = 3  # 8-value blocks: tested as a whole, then branch-free (a mispredicted test costs more than a
# few empty lookups; 4- and 16-value blocks measured slower)
HIST_BINS = ((MAX_BITS >> BLOCK_BITS) + 1) << BLOCK_BITS  # acc: a count per distance, whole 8-value blocks
ONES = ir.Constant(VEC, [-1] * LANES)


def _vector_ctpop(builder):
    name = INTRINSIC_CTPOP_VEC
    return builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(VEC, [VEC]), name=name)


def _nonzero(builder, v):
    wide = builder.bitcast(v, ir.IntType(64 * LANES))
    return builder.icmp_unsigned("!=", wide, ir.Constant(wide.type, 0))


def _hsum(builder, v):
    fn = builder.module.declare_intrinsic(INTRINSIC_REDUCE_ADD, fnty=ir.FunctionType(I64, [VEC]))
    return builder.call(fn, [v])


IOTA = ir.Constant(VEC, list(range(LANES)))
ZERO = ir.Constant(VEC, [0] * LANES)


def _lane_bit(builder, t):
    """Item t's lane (as a vector) and bit in the group."""
    return splat(builder, builder.lshr(t, ir.Constant(I64, 6))), builder.and_(t, ir.Constant(I64, 63))


def _from_mask(builder, t):
    """The group's items t, t + 1, ..., GROUP - 1 (none for t = GROUP), computed: the lanes above t's all ones,
    t's lane from its bit up (the same speed as a table of them, 8 KiB at 4 lanes and 32 KiB at 8, in 4
    interleaved runs at 256 bits: no L1 spent on it)."""
    lane, bit = _lane_bit(builder, t)
    up = builder.select(builder.icmp_signed(">", IOTA, lane), ONES, ZERO)
    at = builder.select(builder.icmp_signed("==", IOTA, lane),
                        splat(builder, builder.shl(ir.Constant(I64, -1), bit)), ZERO)
    return builder.or_(up, at)


def _one_mask(builder, t):
    """Item t alone (none for t = GROUP)."""
    lane, bit = _lane_bit(builder, t)
    return builder.select(builder.icmp_signed("==", IOTA, lane),
                          splat(builder, builder.shl(ir.Constant(I64, 1), bit)), ZERO)


def _acc_ptr(builder, ctx, value):
    return builder.bitcast(builder.gep(ctx["acc"], [value]), VEC.as_pointer())


def _pair_sums(builder, a, b, s):
    """Blocks of s lanes: x takes a's and b's even blocks, y their odd ones, interleaved (s = 1: VPUNPCK{L,H}QDQ;
    2, 4: VSHUFI64X2); x + y sums each lane pair of a and of b."""
    x, y = [], []
    for blk in range(0, LANES // s, 2):
        for src in (0, LANES):
            x += [src + blk * s + t for t in range(s)]
            y += [src + (blk + 1) * s + t for t in range(s)]
    mask = lambda ix: ir.Constant(ir.VectorType(I32, LANES), ix)  # noqa: E731
    return builder.add(builder.shuffle_vector(a, b, mask(x)), builder.shuffle_vector(a, b, mask(y)))


def _lane_sums(builder, leaves):
    """The 8 leaves' lane sums, in order, as 8 / LANES vectors: a transposing reduction (21 shuffles and adds at
    8 lanes) instead of a vector add to memory per leaf."""
    s = 1
    while s < LANES:
        leaves = [_pair_sums(builder, leaves[k], leaves[k + 1], s) for k in range(0, len(leaves), 2)]
        s *= 2
    return leaves


def _blocks(builder, low, ctx):
    """Count the blocks _split queued: acc[base + v] += popcount(block mask & low[v]), v < 8, branch-free, with
    one copy of the block code (a copy per block is no faster and compiles longer). The 8 leaves' counts are
    summed over the lanes first, so acc holds one count a distance (not one a lane) and a block is one vector
    add to memory (two at 4 lanes), not 8."""
    work = ctx["work"]
    n = builder.load(work["n"])
    i, _, loop, done = loop_open(builder, n, "blocks")
    mask = builder.load(builder.gep(work["masks"], [ir.Constant(I64, 0), i]), align=8)
    base = builder.load(builder.gep(work["prefix"], [ir.Constant(I64, 0), i]))
    leaves = [builder.call(_vector_ctpop(builder), [builder.and_(mask, m)]) for m in low]
    for h, sums in enumerate(_lane_sums(builder, leaves)):
        ptr = _acc_ptr(builder, ctx, builder.add(base, ir.Constant(I64, h * LANES)))
        builder.store(builder.add(builder.load(ptr, align=8), sums), ptr, align=8)
    loop_close(builder, i, 1, n, loop, done)


def _low_masks(builder, count):
    """[v] for v < 8: the group's items whose count bits below BLOCK_BITS equal v's (a leaf = its block's
    queued mask & [v]: one AND a leaf, not a tree of them per block), as values and stored (the relevant
    items' lookups)."""
    out = cgutils.alloca_once(builder, ir.ArrayType(VEC, 1 << BLOCK_BITS))
    level = [ONES]
    for k in range(BLOCK_BITS - 1, -1, -1):
        level = [builder.and_(m, count[k] if bit else builder.xor(count[k], ONES)) for m in level for bit in (0, 1)]
    for v, m in enumerate(level):  # level[v]: bits k = BLOCK_BITS - 1 .. 0 of v, most significant first
        builder.store(m, builder.gep(out, [ir.Constant(I64, 0), ir.Constant(I64, v)]), align=8)
    return level, out


def _relevant(builder, ctx):
    """After the tree: each relevant item of group g (jl[p], ascending, from p on) at distance d = reld[p] (the
    caller's) gets relp[p] = the earlier items at d = acc[d] (now with the group's other items and its earlier
    relevant ones) - the group's other items at d from it on: its 8-value block's queued mask (or the empty one)
    & the mask of d's 3 low bits (keeping every leaf's mask cost 15% in stores) & FROM[its position]; then acc[d]
    counts it. Returns the next p."""
    jl, reld, relp = ctx["jl"], ctx["reld"], ctx["relp"]
    head = builder.block
    test, check, body, done = (builder.append_basic_block("rel." + s) for s in ("test", "check", "body", "done"))
    end = builder.mul(builder.add(ctx["g"], ir.Constant(I64, 1)), ir.Constant(I64, GROUP))
    builder.branch(test)
    builder.position_at_end(test)
    p = builder.phi(I64)
    p.add_incoming(ctx["p"], head)
    builder.cbranch(builder.icmp_signed("<", p, ctx["rend"]), check, done)
    builder.position_at_end(check)
    j = builder.load(builder.gep(jl, [p]))
    builder.cbranch(builder.icmp_signed("<", j, end), body, done)
    builder.position_at_end(body)
    d = builder.load(builder.gep(reld, [p]))
    work = ctx["work"]
    blk = builder.load(builder.gep(work["block_of"], [ir.Constant(I64, 0),
                                                      builder.lshr(d, ir.Constant(I64, BLOCK_BITS))]))
    low = builder.and_(d, ir.Constant(I64, (1 << BLOCK_BITS) - 1))
    leaf = builder.and_(builder.load(builder.gep(work["masks"], [ir.Constant(I64, 0), blk]), align=8),
                        builder.load(builder.gep(ctx["low_masks"], [ir.Constant(I64, 0), low]), align=8))
    pos = builder.and_(j, ir.Constant(I64, GROUP - 1))
    after = _from_mask(builder, pos)
    accd = builder.gep(ctx["acc"], [d])
    count = builder.load(accd)
    later = _hsum(builder, builder.call(_vector_ctpop(builder), [builder.and_(leaf, after)]))
    builder.store(builder.sub(count, later), builder.gep(relp, [p]))
    builder.store(builder.add(count, ir.Constant(I64, 1)), accd)  # counted here, not in the tree
    p.add_incoming(builder.add(p, ir.Constant(I64, 1)), builder.block)
    builder.branch(test)
    builder.position_at_end(done)
    return p


REL_SLOTS = 3  # relevant items a group taken branch-free, the rest in a loop (2 or 6: slower)


def _mark_relevant(builder, ctx, j, d, valid):
    """Item j (if valid) joins the relevant mask; its block's lookup is preset to the empty mask (its block may
    hold no other item, then the tree queues nothing there)."""
    t = builder.select(valid, builder.and_(j, ir.Constant(I64, GROUP - 1)), ir.Constant(I64, GROUP))
    one = _one_mask(builder, t)
    work = ctx["work"]
    builder.store(ir.Constant(I64, work["empty"]), builder.gep(work["block_of"], [
        ir.Constant(I64, 0), builder.lshr(d, ir.Constant(I64, BLOCK_BITS))]))
    return one


def _relevant_mask(builder, ctx):
    """The group's relevant items (jl[p], ... below the group's end) as a mask: REL_SLOTS of them branch-free,
    the rest (rare) in a loop. They stay out of the tree (on trained codes they are the near items, whose
    sparse blocks would cost a popcount per distance and mispredicted tests) and _relevant counts them."""
    jl, reld, p, rend = ctx["jl"], ctx["reld"], ctx["p"], ctx["rend"]
    end = builder.mul(builder.add(ctx["g"], ir.Constant(I64, 1)), ir.Constant(I64, GROUP))
    zero = ir.Constant(VEC, [0] * LANES)
    head = builder.block
    any_left = builder.icmp_signed("<", p, rend)
    with builder.if_then(any_left):
        r, valid = zero, None
        last = builder.sub(rend, ir.Constant(I64, 1))
        for s in range(REL_SLOTS):
            at = builder.add(p, ir.Constant(I64, s))
            idx = builder.select(builder.icmp_signed("<", at, rend), at, last)
            j = builder.load(builder.gep(jl, [idx]))
            valid = builder.and_(builder.icmp_signed("<", at, rend), builder.icmp_signed("<", j, end))
            r = builder.or_(r, _mark_relevant(builder, ctx, j, builder.load(builder.gep(reld, [idx])), valid))
        slots = builder.block
        more = builder.append_basic_block("relmask.more")
        loop = builder.append_basic_block("relmask.loop")
        done = builder.append_basic_block("relmask.done")
        builder.cbranch(valid, more, done)  # all slots taken: maybe more items
        builder.position_at_end(more)
        start = builder.add(p, ir.Constant(I64, REL_SLOTS))
        builder.branch(loop)
        builder.position_at_end(loop)
        q = builder.phi(I64)
        q.add_incoming(start, more)
        rl = builder.phi(VEC)
        rl.add_incoming(r, more)
        ok = builder.icmp_signed("<", q, rend)
        qc = builder.select(ok, q, last)
        j = builder.load(builder.gep(jl, [qc]))
        ok = builder.and_(ok, builder.icmp_signed("<", j, end))
        rl2 = builder.or_(rl, _mark_relevant(builder, ctx, j, builder.load(builder.gep(reld, [qc])), ok))
        q.add_incoming(builder.add(q, ir.Constant(I64, 1)), loop)
        rl.add_incoming(rl2, loop)
        builder.cbranch(ok, loop, done)
        builder.position_at_end(done)
        inner = builder.phi(VEC)
        inner.add_incoming(r, slots)
        inner.add_incoming(rl2, loop)
        body = builder.block
    out = builder.phi(VEC)
    out.add_incoming(zero, head)
    out.add_incoming(inner, body)
    return out


def _split(builder, mask, count, k, prefix, ctx):
    """Count mask's items, whose values are prefix + [0, 2^(k+1)), by the count bits k, k - 1, ..."""
    if k < BLOCK_BITS:  # a block of 2^BLOCK_BITS values: queued for _blocks
        work = ctx["work"]
        n = builder.load(work["n"])
        builder.store(mask, builder.gep(work["masks"], [ir.Constant(I64, 0), n]), align=8)
        builder.store(ir.Constant(I64, prefix), builder.gep(work["prefix"], [ir.Constant(I64, 0), n]))
        builder.store(n, builder.gep(work["block_of"], [ir.Constant(I64, 0), ir.Constant(I64, prefix >> BLOCK_BITS)]))
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
def planes_hist(typingctx, P, g, sel, A, ai, acc, jl, p, reld, relp):
    """See the module docstring."""
    if not (uint64_arrays((P, A, acc), (3, 3, 1)) and row_vector(sel)
            and all(int64_vector(a) for a in (jl, reld, relp))):
        return None
    sig = types.int64(P, types.int64, sel, A, types.int64, acc, jl, types.int64, reld, relp)

    def codegen(context, builder, signature, args):
        arr = arrays(context, signature, builder, args, (0, 2, 3, 5, 6, 8, 9))
        count = selected_counts(builder, arr[0], arr[2], args[1], arr[3], args[4])
        ctx = dict(acc=arr[5].data, jl=arr[6].data, rend=builder.extract_value(arr[6].shape, 0), g=args[1],
                   p=args[7], reld=arr[8].data, relp=arr[9].data)
        nblocks = (MAX_BITS >> BLOCK_BITS) + 1
        ctx["work"] = dict(n=cgutils.alloca_once_value(builder, ir.Constant(I64, 0)), empty=nblocks,
                           masks=cgutils.alloca_once(builder, ir.ArrayType(VEC, nblocks + 1)),
                           prefix=cgutils.alloca_once(builder, ir.ArrayType(I64, nblocks)),
                           block_of=cgutils.alloca_once(builder, ir.ArrayType(I64, nblocks)))
        builder.store(ir.Constant(VEC, [0] * LANES), builder.gep(ctx["work"]["masks"], [
            ir.Constant(I64, 0), ir.Constant(I64, nblocks)]), align=8)  # the empty mask
        rel = _relevant_mask(builder, ctx)
        _split(builder, builder.xor(rel, ONES), count, COUNT_BITS - 1, 0, ctx)
        low, ctx["low_masks"] = _low_masks(builder, count)
        _blocks(builder, low, ctx)
        return _relevant(builder, ctx)
    return sig, codegen
