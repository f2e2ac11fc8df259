"""Bit-sliced ("vertical") Hamming kernels: which of a group of database items (256 on AVX2, 512 on AVX-512
with VPOPCNTQ: one vector per bit-plane) lie below a distance (top-K, here) and their per-distance counts
(exact mAP, eval/kernels/planes_hist.py).
Imports only eval/kernels/isa.py (lanes, group, intrinsics) and words.py; eval/kernels/planes_select.py (the
rows), eval/kernels/planes_hist.py, eval/search/flat.py and eval/metrics/exact.py sit above it.

    P = bit_planes(db_codes)        # uint64 [G, 64 W + 10, LANES]: P[g, b, l] bit t = bit b of item GROUP g + 64l + t,
                                    # then 9 planes of the items' popcounts in binary, then a zero plane
    plan = plan_queries(q_codes, bits, qblock)   # kernels/planes_select.py: each query's row (which planes it adds)
    planes_dist(P, g, plan.anchors[a], A, ai)    # in numba: A[ai] = group g's distances to anchor a, in binary
    planes_below(P, g, sel, A, ai, lim, lt, cnt)  # returns 0 when no item of group g is below lim; else lt[l]
                                    # bit t set <=> item GROUP g + 64l + t at distance < lim, and cnt [9, LANES]
                                    # the distances in binary (cnt[k, l] bit t = bit k of that item's); lt
                                    # and cnt are only written in that case. A[ai]: a relative row's anchor

Why: LLVM's AVX2 popcount of a word-major stream (a nibble lookup with two VPSHUFB per vector, then VPSADBW)
costs ~4.5 vector ops per item at 128 bits. Here one 256-bit vector holds one bit of 256
items, and Harley-Seal carry-save adders (5 logic ops per full adder, any of the 4 vector pipes) count them in
binary. A direct row counts half the planes or fewer: with c = the sum of the planes where the query has a 1,
d = |q| + |x| - 2c (|x|: the item's popcount, stored), or with the planes where it has a 0, d = |q| - |x| + 2c,
whichever is shorter (~5 ops per counted plane, ~1.3 ops per item at 128 bits, and no XOR with the query).
A relative row counts only the bits where its query differs from an anchor whose distances were counted
once for the group (d = d(x, m) - |T| + 2c, each plane XORed with the query's bit: the same cost a plane).
The distances are never unpacked: the comparison with lim runs on the planes, and the few items below it read
their distance off `cnt` (re-reading the row codes costs cache misses).
The kernels are LLVM IR built here: numba's scalar code was not vectorised.
On AVX-512 (8 lanes) a full adder is two VPTERNLOGQ (LLVM fuses only part of the 5 ops), and a group is 512
items, so the fixed costs per group (row decoding, tests, branches) count half per item.
Figures: `c3dhash bench hamming` writes them to bench/results/ (docs/performance.md has the current ones).
"""
from __future__ import annotations

import numpy as np
from llvmlite import ir
from numba import njit, prange, types
from numba.extending import intrinsic

from c3dhash.eval.kernels.isa import GROUP, INTRINSIC_PREFETCH, INTRINSIC_TERNLOG, LANES, LAYOUT, TERNLOG, Layout
from c3dhash.eval.kernels.words import popcount64

__all__ = ["GROUP", "LANES", "LAYOUT", "Layout"]  # re-exported: the layout lives in kernels/isa.py


COUNT_BITS = 9  # distances < 512
MAX_BITS = 448  # distances in 9 bits (< 512); a count adds at most 224 planes (the sixteens counter: 5 bits)
SUM_BITS = COUNT_BITS + 1  # selected_counts' two's complement arithmetic (|q| + |x| < 1024)
# A query_select row (int32, built by kernels/planes_select.py, read by the IR below): header fields, then the
# planes' word offsets, then (relative rows) the query's bit masks.
ROW_N16 = 0  # planes counted in 16-plane steps
ROW_ZX = 1  # -1: use ~X (the query's clear bits are counted)
ROW_N8 = 2  # 1: one more 8-plane step
ROW_ZY = 3  # -1: use ~Y (its set bits are counted)
ROW_REL = 4  # 1: a relative row (X = the anchor's distances)
ROW_K = 5  # SUM_BITS entries: the constant K in two's complement, one 0 / -1 mask a bit
SEL_HDR = ROW_K + SUM_BITS  # the first plane entry

I64, I32 = ir.IntType(64), ir.IntType(32)
VEC = ir.VectorType(I64, LANES)


def splat(builder, x):
    v = builder.insert_element(ir.Constant(VEC, ir.Undefined), x, ir.Constant(I32, 0))
    return builder.shuffle_vector(v, ir.Constant(VEC, ir.Undefined), ir.Constant(ir.VectorType(I32, LANES),
                                                                                 [0] * LANES))


def _ternlog(builder, a, b, c, imm):
    """VPTERNLOGQ: any 3-input bitwise function in one instruction (AVX-512F)."""
    fn = builder.module.declare_intrinsic(INTRINSIC_TERNLOG,
                                          fnty=ir.FunctionType(VEC, [VEC, VEC, VEC, I32]))
    return builder.call(fn, [a, b, c, ir.Constant(I32, imm)])


def _csa(builder, a, b, c):
    """Full adder on bit vectors: (carry, sum) of a + b + c (on AVX-512: majority 0xE8 and parity 0x96)."""
    if TERNLOG:
        return _ternlog(builder, a, b, c, 0xE8), _ternlog(builder, a, b, c, 0x96)
    u = builder.xor(a, b)
    return builder.or_(builder.and_(a, b), builder.and_(u, c)), builder.xor(u, c)


def _below(builder, count, lim):
    """Bit-sliced count < lim, most significant bit first: lt |= eq & ~d & L, eq &= ~(d ^ L)."""
    ones = ir.Constant(VEC, [-1] * LANES)
    lt, eq = ir.Constant(VEC, [0] * LANES), ones
    for k in range(len(count) - 1, -1, -1):
        bit = builder.and_(builder.lshr(lim, ir.Constant(I64, k)), ir.Constant(I64, 1))
        lk = splat(builder, builder.sub(ir.Constant(I64, 0), bit))
        lt = builder.or_(lt, builder.and_(builder.and_(eq, builder.xor(count[k], ones)), lk))
        eq = builder.and_(eq, builder.xor(builder.xor(count[k], lk), ones))
    return lt


def _add8(builder, x, o, t, f):
    """8 bit-planes x into the ones, twos and fours of a binary counter: (the eights carry, o, t, f)."""
    fours = []
    for quarter in (0, 4):
        tA, o = _csa(builder, o, x[quarter], x[quarter + 1])
        tB, o = _csa(builder, o, x[quarter + 2], x[quarter + 3])
        fx, t = _csa(builder, t, tA, tB)
        fours.append(fx)
    c, f = _csa(builder, f, fours[0], fours[1])
    return c, o, t, f


def _ripple(builder, high, c):
    """Carry c into the counter's higher bits (half adders)."""
    out = []
    for s in high:
        out.append(builder.xor(s, c))
        c = builder.and_(s, c)
    return out


def _count_step(builder, x, st):
    """Add 16 bit-planes x into the binary counter st = [ones, twos, fours, eights, s16, s32, ...]
    (Harley-Seal: full adders, the sixteens carry rippled up)."""
    e0, o, t, f = _add8(builder, x[:8], *st[:3])
    e1, o, t, f = _add8(builder, x[8:], o, t, f)
    c, e = _csa(builder, st[3], e0, e1)
    return [o, t, f, e] + _ripple(builder, st[4:], c)


def _count_step8(builder, x, st):
    """Add 8 bit-planes x into st (_count_step's first half; its eights carry rippled up)."""
    c, o, t, f = _add8(builder, x, *st[:3])
    return [o, t, f] + _ripple(builder, st[3:], c)


def loop_open(builder, n, name):
    """`for i in range(0, n, step)` in IR, no iteration when n <= 0: returns (i, the entry block, the loop block,
    the block after it); the builder is left in the loop body, which loop_close ends."""
    entry = builder.block
    loop, done = builder.append_basic_block(name + ".loop"), builder.append_basic_block(name + ".done")
    builder.cbranch(builder.icmp_signed(">", n, ir.Constant(I64, 0)), loop, done)
    builder.position_at_end(loop)
    i = builder.phi(I64)
    i.add_incoming(ir.Constant(I64, 0), entry)
    return i, entry, loop, done


def loop_close(builder, i, step, n, loop, done):
    ni = builder.add(i, ir.Constant(I64, step))
    i.add_incoming(ni, builder.block)
    builder.cbranch(builder.icmp_signed("<", ni, n), loop, done)
    builder.position_at_end(done)


def _selected_planes(builder, base, sa, start, count, masked):
    """The group's planes named by the query_select row's entries start, ..., start + count - 1; masked
    (relative rows): each XORed with its entry in the row's second half (0 or -1: the query's bit)."""
    x = []
    half = builder.lshr(builder.sub(builder.extract_value(sa.shape, 0), ir.Constant(I64, SEL_HDR)), ir.Constant(I64, 1))
    for k in range(count):
        at = builder.add(start, ir.Constant(I64, SEL_HDR + k))
        b = row_entry(builder, sa, at)
        ptr = builder.bitcast(builder.gep(base, [b]), VEC.as_pointer())  # b: the plane's word offset
        v = builder.load(ptr, align=8)
        if masked:
            v = builder.xor(v, row_mask(builder, sa, builder.add(at, half)))
        x.append(v)
    return x


def _tail8(builder, base, sa, n16, c, masked):
    """The last 8 selected planes when the row has them (n8 = 1: half the zero planes a 16-plane step pads)."""
    head = builder.block
    n8 = row_entry(builder, sa, ROW_N8)
    with builder.if_then(builder.icmp_signed("!=", n8, ir.Constant(I64, 0))):
        more = _count_step8(builder, _selected_planes(builder, base, sa, n16, 8, masked), c)
        tail = builder.block
    return _phis(builder, [(c, head), (more, tail)])


def _phis(builder, incoming):
    """One phi per vector of equal-length lists [(values, block), ...]."""
    out = []
    for k in range(len(incoming[0][0])):
        phi = builder.phi(VEC)
        for vals, block in incoming:
            phi.add_incoming(vals[k], block)
        out.append(phi)
    return out


def _count_selected(builder, base, sa, masked):
    """c = the sum of the row's selected planes (XORed with its masks when masked), in binary: COUNT_BITS planes."""
    n16 = row_entry(builder, sa, ROW_N16)
    i0, entry, loop, done = loop_open(builder, n16, "sel")
    st = [builder.phi(VEC) for _ in range(COUNT_BITS)]
    for p in st:
        p.add_incoming(ir.Constant(VEC, [0] * LANES), entry)
    new = _count_step(builder, _selected_planes(builder, base, sa, i0, 16, masked), st)
    for p, v in zip(st, new):
        p.add_incoming(v, builder.block)
    loop_close(builder, i0, 16, n16, loop, done)
    c = _phis(builder, [([ir.Constant(VEC, [0] * LANES)] * COUNT_BITS, entry), (new, loop)])
    return _tail8(builder, base, sa, n16, c, masked)


def selected_counts(builder, pa, sa, g, ba, bi):
    """Group g's distances in binary from bit_planes' layout and a query_select row (ba, bi: the relative rows'
    anchor distances, planes_dist's out[bi]). A direct row: c = the sum of the selected planes (half the bits
    or fewer), then d = |q| + |x| - 2c (selected: the query's set bits) or |q| - |x| + 2c (its clear bits),
    as X + ~Y + (|q| + 1) in 10-bit two's complement: half the planes of a full count, no XOR with the query.
    A relative row (eval/kernels/planes_select.py: q's anchor m differs from q on the bits T): c = sum over T of
    (plane ^ q's bit), then d = d(x, m) - |T| + 2c, as X + Y + K with X = d(x, m)."""
    nplanes = builder.extract_value(pa.shape, 1)
    base = builder.gep(pa.data, [builder.mul(builder.mul(g, nplanes), ir.Constant(I64, LANES))])
    rel = builder.icmp_signed("!=", row_entry(builder, sa, ROW_REL), ir.Constant(I64, 0))
    with builder.if_else(rel) as (relative, direct):
        with relative:
            c_rel, b_rel = _count_selected(builder, base, sa, True), builder.block
        with direct:
            c_dir, b_dir = _count_selected(builder, base, sa, False), builder.block
    c = _phis(builder, [(c_rel, b_rel), (c_dir, b_dir)])
    zero = ir.Constant(VEC, [0] * LANES)
    xplanes = builder.gep(base, [builder.mul(builder.sub(nplanes, ir.Constant(I64, COUNT_BITS + 1)),
                                             ir.Constant(I64, LANES))])
    anchor = builder.gep(ba.data, [builder.mul(bi, ir.Constant(I64, COUNT_BITS * LANES))])
    xbase = builder.select(rel, anchor, xplanes)  # |x| (direct) or d(x, m) (relative)
    X = []
    for k in range(COUNT_BITS):
        ptr = builder.gep(xbase, [ir.Constant(I64, k * LANES)])
        X.append(builder.load(builder.bitcast(ptr, VEC.as_pointer()), align=8))
    X.append(zero)
    Y = [zero] + c[:SUM_BITS - 1]  # 2c
    zx = row_mask(builder, sa, ROW_ZX)  # -1: ~X (zeros mode)
    zy = row_mask(builder, sa, ROW_ZY)  # -1: ~Y (set-bits mode)
    out, carry, rc = [], zero, zero
    for k in range(SUM_BITS):
        # |q| + |x| - 2c = X + ~Y + K, |q| - |x| + 2c = ~X + Y + K, d(x, m) - |T| + 2c = X + Y + K: no select
        a, nb = builder.xor(X[k], zx), builder.xor(Y[k], zy)
        kk = row_mask(builder, sa, ROW_K + k)
        cy, sm = _csa(builder, a, nb, kk)  # a + nb + K: carry-save, then one ripple add
        u = builder.xor(sm, carry)
        out.append(builder.xor(u, rc))
        rc = builder.or_(builder.and_(sm, carry), builder.and_(u, rc))
        carry = cy
    return out[:COUNT_BITS]


def _store_counts(builder, out, count):
    """count's COUNT_BITS vectors to out (a uint64 pointer), one after another."""
    for k, v in enumerate(count):
        builder.store(v, builder.bitcast(builder.gep(out, [ir.Constant(I64, k * LANES)]), VEC.as_pointer()),
                      align=8)


def uint64_arrays(arrays, ndims):
    return (all(isinstance(a, types.Array) and a.dtype == types.uint64 and a.layout == "C" for a in arrays)
            and tuple(a.ndim for a in arrays) == ndims)


def int64_vector(a):
    return isinstance(a, types.Array) and a.dtype == types.int64 and a.ndim == 1


ROW_DTYPE = np.int32  # eval/kernels/planes_select.py's rows: plane numbers < 512, counts, masks 0 / -1 (half int64's)
MASK8 = ir.VectorType(I32, 2 * LANES)


def row_vector(a):
    return isinstance(a, types.Array) and a.dtype == types.int32 and a.ndim == 1


def _row_at(builder, sa, at):
    return builder.gep(sa.data, [ir.Constant(I64, at) if isinstance(at, int) else at])


def row_entry(builder, sa, at):
    """Entry `at` (an int or an i64 value) of a row, as i64."""
    return builder.sext(builder.load(_row_at(builder, sa, at)), I64)


def row_mask(builder, sa, at):
    """A 0 / -1 entry of a row as a vector of its bits (one 32-bit broadcast load, VPBROADCASTD)."""
    v = builder.insert_element(ir.Constant(MASK8, ir.Undefined), builder.load(_row_at(builder, sa, at)),
                               ir.Constant(I32, 0))
    return builder.bitcast(builder.shuffle_vector(v, ir.Constant(MASK8, ir.Undefined),
                                                  ir.Constant(ir.VectorType(I32, 2 * LANES), [0] * (2 * LANES))), VEC)


def arrays(context, signature, builder, args, which):
    """The intrinsic's array arguments `which`, as numba array structs by argument position."""
    return {i: context.make_array(signature.args[i])(context, builder, args[i]) for i in which}


@intrinsic
def planes_below(typingctx, P, g, sel, A, ai, lim, lt, cnt):
    """See the module docstring."""
    if not (uint64_arrays((P, A, lt, cnt), (3, 3, 1, 2)) and row_vector(sel)):
        return None
    sig = types.int64(P, types.int64, sel, A, types.int64, types.int64, lt, cnt)

    def codegen(context, builder, signature, args):
        arr = arrays(context, signature, builder, args, (0, 2, 3, 6, 7))
        new = selected_counts(builder, arr[0], arr[2], args[1], arr[3], args[4])
        lt_v = _below(builder, new, args[5])
        r = builder.extract_element(lt_v, ir.Constant(I32, 0))
        for k in range(1, LANES):
            r = builder.or_(r, builder.extract_element(lt_v, ir.Constant(I32, k)))
        with builder.if_then(builder.icmp_unsigned("!=", r, ir.Constant(I64, 0)), likely=False):
            # only groups with an item below lim (a few %) need the masks and counts
            builder.store(lt_v, builder.bitcast(arr[6].data, VEC.as_pointer()), align=8)
            _store_counts(builder, arr[7].data, new)
        return r
    return sig, codegen


@intrinsic
def planes_dist(typingctx, P, g, sel, A, ai):
    """A[ai] = group g's distances to a direct row's query (an anchor), in binary: COUNT_BITS x LANES words."""
    if not (uint64_arrays((P, A), (3, 3)) and row_vector(sel)):
        return None
    sig = types.void(P, types.int64, sel, A, types.int64)

    def codegen(context, builder, signature, args):
        arr = arrays(context, signature, builder, args, (0, 2, 3))
        new = selected_counts(builder, arr[0], arr[2], args[1], arr[3], ir.Constant(I64, 0))
        _store_counts(builder, builder.gep(arr[3].data, [builder.mul(args[4], ir.Constant(I64, COUNT_BITS * LANES))]),
                      new)
        return context.get_dummy_value()
    return sig, codegen


@intrinsic
def prefetch(typingctx, a, i):
    """llvm.prefetch of a's element i (read, into L2: locality 2) (PREFETCHT1); no fault on any address."""
    if not (isinstance(a, types.Array) and a.layout == "C" and isinstance(i, types.Integer)):
        return None
    sig = types.void(a, i)

    def codegen(context, builder, signature, args):
        arr = context.make_array(signature.args[0])(context, builder, args[0])
        ptr = builder.bitcast(builder.gep(arr.data, [args[1]]), ir.IntType(8).as_pointer())
        fn = builder.module.declare_intrinsic(INTRINSIC_PREFETCH, fnty=ir.FunctionType(ir.VoidType(), [
            ptr.type, I32, I32, I32]))
        builder.call(fn, [ptr, ir.Constant(I32, 0), ir.Constant(I32, 2), ir.Constant(I32, 1)])
        return context.get_dummy_value()
    return sig, codegen


@njit(cache=True, inline="always")
def prefetch_next_chunk(P, c0, c1, part, parts):
    """While a block of queries works on the chunk of groups c0 .. c1 - 1, prefetch part `part` of `parts` of
    the next chunk (as many groups, one line of 64 bytes at a time). A query reads only its selected planes of
    a group, scattered over the group, so the first query of a block to need a plane waited for memory (a chunk
    of 1e6 x 256-bit planes is read from DRAM once per query block)."""
    g0, g1 = c1, min(P.shape[0], 2 * c1 - c0)
    if g1 <= g0:
        return
    flat = P.reshape(P.size)
    lo, hi = g0 * P.shape[1] * P.shape[2], g1 * P.shape[1] * P.shape[2]
    step = (hi - lo + parts - 1) // parts
    a = lo + part * step
    for k in range(a, min(hi, a + step), 8):
        prefetch(flat, k)


@njit(cache=True)
def vectors(n):
    """n uint64 zeros starting on a 64-byte boundary, so that no bit-plane vector straddles two cache lines
    (numpy and numba align to 16 bytes: with 8 lanes every vector load split, and a direct row's count took
    0.115-0.165 ns an item at 128 bits against 0.097-0.102 aligned, same process, Zen 5)."""
    raw = np.zeros(n + 7, np.uint64)
    off = ((64 - raw.ctypes.data % 64) % 64) // 8
    return raw[off:off + n]


@njit(cache=True, inline="always")
def count_at(cnt, lane, t):
    """Item (lane, t)'s distance from planes_below's cnt."""
    d = 0
    for k in range(COUNT_BITS):
        d |= np.int64((cnt[k, lane] >> np.uint64(t)) & np.uint64(1)) << k
    return d


@njit(cache=True)
def _transpose64(a):
    """In place: a[b] bit t <- a[t] bit b (64 x 64 bits, block swaps of 32, 16, ..., 1)."""
    j = 32
    m = np.uint64(0x00000000FFFFFFFF)
    while j:
        sj = np.uint64(j)
        for k in range(64):
            if k & j == 0:
                t = ((a[k] >> sj) ^ a[k + j]) & m
                a[k] ^= t << sj
                a[k + j] ^= t
        j >>= 1
        m ^= m << np.uint64(j)


@njit(parallel=True, cache=True)
def _planes_kernel(db, out):
    n, nw = db.shape
    for g in prange(out.shape[0]):
        a = np.empty(64, np.uint64)
        for lane in range(LANES):
            j0 = g * GROUP + lane * 64
            for w in range(nw):
                for t in range(64):
                    a[t] = db[j0 + t, w] if j0 + t < n else np.uint64(0)  # padding items: zero codes, never reported
                _transpose64(a)
                out[g, w * 64:(w + 1) * 64, lane] = a
            for t in range(64):  # then the items' popcounts in binary (the zero plane after them stays zero)
                pc = 0
                if j0 + t < n:
                    for w in range(nw):
                        pc += popcount64(db[j0 + t, w])
                for k in range(COUNT_BITS):
                    out[g, nw * 64 + k, lane] |= np.uint64((pc >> k) & 1) << np.uint64(t)


def bit_planes(db: np.ndarray) -> np.ndarray:
    """uint64 [N, W] codes -> [ceil(N / GROUP), 64 W + COUNT_BITS + 1, LANES] (see the module docstring)."""
    shape = ((db.shape[0] + GROUP - 1) // GROUP, db.shape[1] * 64 + COUNT_BITS + 1, LANES)
    out = vectors(shape[0] * shape[1] * shape[2]).reshape(shape)
    if db.shape[0]:
        _planes_kernel(np.ascontiguousarray(db), out)
    return out
