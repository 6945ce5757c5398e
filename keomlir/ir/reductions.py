"""Reductions: each one's checks, output shapes, dense semantics and lowering.

A reduction folds the values F_ij (and G_ij for the weighted ones) of one row
i over j.  Its lowering keeps a state in slots, updated once per j; j is
visited in blocks and `end_block` lets sums fold a block's partial result into
a compensated total (float32 sums stay accurate for N in the millions).
`merge` folds a second state (other j's: another SIMD lane, the tail, another
thread) into the first, after `end_block` on both; ties go to the lower j.
Lowering calls only `Emitter` methods (slots, loops, conditional blocks, lanes),
never the LLVM builder, so one state machine serves scalar, SIMD and NVPTX code.
"""

from __future__ import annotations


import numpy as np

REDUCTIONS: dict[str, "Reduction"] = {}

_INF = float("inf")


def register(cls):
    REDUCTIONS[cls.name] = cls()
    return cls


class ReductionError(ValueError):
    pass


class Reduction:
    name = ""
    needs_formula2 = False  # formula2 (G) is required
    allows_formula2 = False
    needs_k = False
    scalar_formula = False  # F must have dimension 1
    compensated = False  # uses the sum scheme
    tile_rows = 4  # i rows per load of j data in SIMD code (state size permitting)
    lanes_share_state = False  # SIMD lanes update one scalar state (else: one state a lane, merged)
    blocks = True  # SIMD code calls `end_block` after each block of j (False: once its loop over j ends)
    block_vectors = None  # SIMD blocks hold at most this many j vectors (None: the schedule's block)
    wide_state = False  # keeps a wide F or G (em.is_wide) in array slots, updated by loops over components
    # update_screened(em, ea, st, may_beat, exact, j), where defined (K-min): `update` of a scalar F
    # whose exact values, exact(), are made only when may_beat(v) (a lane mask that holds wherever F may
    # be below the scalar v, NaN v included) says some lane may enter the state
    update_screened = None
    # term_slots(em, st) -> (acc, comp), where defined (Sum): the slots a term of F is added to (a list of
    # pointers or an array slot, one a component), and for a compensated add per term the slots of
    # its compensation (else None): a loop nest may add terms itself (the column micro-kernel), the
    # reduction's `end_block`, `merge` and `finalize` doing the rest
    term_slots = None

    def full(self, em, ea, states):
        """An i1, or None (never): SIMD code without `blocks` leaves its loop over j for `end_blocks`
        after an update of the tile's states (updated together) that makes it true, and goes on."""
        return None

    def end_blocks(self, em, ea, states):
        """`end_block` on each of the states of a tile of rows, updated together (a reduction may
        interleave their work: K-min)."""
        for st in states:
            self.end_block(em, ea, st)

    def check(self, dim_f, dim_g, k):
        if self.scalar_formula and dim_f != 1:
            raise ReductionError(f"reduction {self.name} needs a scalar formula, got dimension {dim_f}")
        if self.needs_formula2 and dim_g is None:
            raise ReductionError(f"reduction {self.name} needs formula2 (the weights)")
        if dim_g is not None and not (self.needs_formula2 or self.allows_formula2):
            raise ReductionError(f"reduction {self.name} takes no formula2")
        if self.needs_k:
            if k is None or isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
                raise ReductionError(f"reduction {self.name} needs opt_arg=K, a positive integer, got {k!r}")
        elif k is not None:
            raise ReductionError(f"reduction {self.name} takes no opt_arg, got {k!r}")

    def outputs(self, dim_f, dim_g, k):
        """[(shape of one row's output, 'float' or 'index')]."""
        return [((dim_f,), "float")]


# ---- Sum ----------------------------------------------------------------------------


@register
class Sum(Reduction):
    name = "Sum"
    compensated = True
    wide_state = True

    def reference(self, F, G, k):
        return [F.sum(axis=1)]

    def init(self, em, ea, dims, k):
        zero = ea.const(0)
        d = dims[0]
        if em.is_wide(d):
            return self._wide_init(em, ea, d)
        return {
            "total": [ea.slot(zero) for _ in range(d)],
            "comp": [ea.slot(zero) for _ in range(d)] if em.scheme != "direct_sum" else None,
            "block": [ea.slot(zero) for _ in range(d)] if em.scheme != "kahan_scheme" and em.scheme != "direct_sum" else None,
        }

    def update(self, em, ea, st, f, g, j):
        if not isinstance(st["total"], list):
            with em.components(f.dim) as c:
                self._add(em, ea, st, f.at(c), lambda slot: ea.elem(slot, c))
            return
        for c, v in enumerate(f):
            self._add(em, ea, st, v, lambda slot: slot[c])

    def _add(self, em, ea, st, v, at):
        """One component's term into its slots; at(slot) is that component's pointer."""
        v = em.convert(v, ea)
        if em.scheme == "direct_sum":
            ea.store(at(st["total"]), ea.add(ea.load(at(st["total"])), v))
        elif em.scheme == "kahan_scheme":
            ea.kahan_add(at(st["total"]), at(st["comp"]), v)
        else:
            ea.store(at(st["block"]), ea.add(ea.load(at(st["block"])), v))

    def term_slots(self, em, st):
        if em.scheme == "kahan_scheme":
            return st["total"], st["comp"]
        return st["total" if em.scheme == "direct_sum" else "block"], None

    def end_block(self, em, ea, st):
        if st["block"] is None:
            return
        if not isinstance(st["block"], list):
            with ea.components(st["block"].n) as c:
                self._end_block1(ea, st, lambda slot: ea.elem(slot, c))
            return
        for c in range(len(st["block"])):
            self._end_block1(ea, st, lambda slot: slot[c])

    def _end_block1(self, ea, st, at):
        blk = at(st["block"])
        ea.kahan_add(at(st["total"]), at(st["comp"]), ea.load(blk))
        ea.store(blk, ea.const(0))

    def finalize(self, em, ea, st):
        if not isinstance(st["total"], list):
            total = st["total"]
            return [em.wide(total.n, lambda c: ea.convert(ea.load(ea.elem(total, c)), em))]
        return [[ea.convert(ea.load(p), em) for p in st["total"]]]

    def merge(self, em, ea, st, other):
        if not isinstance(st["total"], list):
            with ea.components(st["total"].n) as c:
                self._merge1(ea, st, other, lambda slot: ea.elem(slot, c))
            return
        for c in range(len(st["total"])):
            self._merge1(ea, st, other, lambda slot: slot[c])

    def _merge1(self, ea, st, other, at):
        total = at(st["total"])
        if st["comp"] is None:
            ea.store(total, ea.add(ea.load(total), ea.load(at(other["total"]))))
        else:  # the other sum is total - comp
            ea.kahan_add(total, at(st["comp"]), ea.load(at(other["total"])))
            ea.kahan_add(total, at(st["comp"]), ea.neg(ea.load(at(other["comp"]))))

    def _wide_init(self, em, ea, d):
        """The same slots as arrays of d components (loops, for a wide F)."""
        zero = ea.const(0)
        return {
            "total": ea.slot_array(d, zero),
            "comp": ea.slot_array(d, zero) if em.scheme != "direct_sum" else None,
            "block": ea.slot_array(d, zero) if em.scheme not in ("kahan_scheme", "direct_sum") else None,
        }


# ---- LogSumExp family: running maximum m and sum s of exp(F - m) * G ------------------


class Scratch:
    """Working memory a reduction keeps beside its state, not in it: never saved, merged or
    split into lanes (empty whenever the state is at rest, after `end_block`)."""

    def __init__(self, **parts):
        self.__dict__.update(parts)


BUFFER = 64  # j vectors a SIMD LogSumExp state buffers before taking their exps (`_ShiftedExpSum`)


def _lowest(em):
    """The most negative finite number of the emitter's type."""
    return em.const(-float(np.finfo(np.float32 if em.bits == 32 else np.float64).max))


class _ShiftedExpSum(Reduction):
    """State (m, s_1..s_d): a maximum m and Σ exp(F - m) w, for weights w (s in array slots
    for a wide G: one loop over the weights per update), compensated; m starts at the
    lowest finite number, so that F - m is never -inf - (-inf).

    SIMD code buffers the F (and w) of a block's j vectors (`block_vectors`: up to BUFFER)
    with their maximum bm, then at its end takes each one's exp against bm and absorbs the
    batch into (m, s) at once (`_flush`):
    the running maximum is rescaled once per batch, whatever the order of the data, and
    each j costs one exp, one FMA and a max (no select between a rescale and an add).
    Scalar code (the tail, the GPU) absorbs each j as it comes (`_absorb`)."""

    scalar_formula = True
    compensated = True
    wide_state = True
    block_vectors = BUFFER  # (the batch waits for the block's end: the j loop has no branch of its own)

    def weights(self, em, g):
        return [em.const(1)] if g is None else g

    def init(self, em, ea, dims, k):
        n = self.n_weights(dims)
        zero = ea.const(0)
        if dims[1] is not None and em.is_wide(dims[1]):
            return {"m": ea.slot(_lowest(ea)), "s": ea.slot_array(n, zero), "c": ea.slot_array(n, zero),
                    "bm": ea.slot(_lowest(ea)), "bs": ea.slot_array(n, zero)}
        st = {
            "m": ea.slot(_lowest(ea)), "s": [ea.slot(zero) for _ in range(n)],
            "c": [ea.slot(zero) for _ in range(n)],
            "bm": ea.slot(_lowest(ea)), "bs": [ea.slot(zero) for _ in range(n)],
        }
        if ea.lanes is not None:  # SIMD: F and the weights other than 1 of a batch of j vectors
            es = ea.with_lanes(None)
            stored = n if dims[1] is not None else 0
            # (low: the batch's least G, where F = -G is stored as G: `update`)
            # each array starts where its stores keep clear of the loads of j data (`end_blocks`)
            arrays = [ea.array(ea.t, BUFFER + ea.unaliased_room()) for _ in range(1 + stored)]
            st["batch"] = Scratch(f=arrays[0], w=arrays[1:], count=es.slot(es.index_const(0), es.index_const(0).type),
                                  starts=[es.entry_slot(es.index_const(0), es.index_const(0).type) for _ in arrays],
                                  j=es.entry_slot(es.index_const(0), es.index_const(0).type),
                                  low=ea.slot(ea.neg(_lowest(ea))), negated=None)
        return st

    def update(self, em, ea, st, f, g, j):
        f = em.convert(f[0], ea)
        weights = self.weights(em, g)
        if isinstance(weights, list):
            w = [em.convert(v, ea) for v in weights]
        else:
            w = ea.wide(weights.dim, lambda c: em.convert(weights.at(c), ea))
        if st.get("batch") is None:
            self._absorb(ea, st["bm"], st["bs"], None, f, w, flush=g is None)
            return
        batch, es = st["batch"], ea.with_lanes(None)
        k = es.load(batch.count)
        # F = -G (LogSumExp of -SqDist): G stored and its minimum kept, no sign flip a pair; the
        # exps take the sign in their FMAs (`_flush`)
        minus = ea.negated(f)
        batch.negated = minus is not None
        for arr, start, v in zip([batch.f] + batch.w, batch.starts, [f if minus is None else minus] + w):
            ea.store(ea.at(arr, es.index_sum(es.load(start), k)), v)
        es.store(batch.j, em.lane(j, es.index_const(0)))
        # a NaN F is left out of the maximum, and makes its own term NaN
        if minus is None:
            bm = ea.load(st["bm"])
            ea.store(st["bm"], ea.select(ea.cmp(">", f, bm), f, bm))
        else:
            low = ea.load(batch.low)
            ea.store(batch.low, ea.select(ea.cmp("<", minus, low), minus, low))
        es.store(batch.count, es.index_add(k, 1))

    def _flush(self, ea, st):
        """Absorb the batch into (m, s): Σ exp(F - bm) w over it (F - bm <= 0: one exp per j, no
        rescale), then that sum as one term exp(bm) * sum.  Where bm = +inf (an infinite F; rare:
        a pass of its own), the infinite F are first made the largest finite number, F - bm taken
        against it: their terms exp(0) = 1, (+inf, their count) as the scalar update makes it."""
        batch, es = st["batch"], ea.with_lanes(None)
        n = len(st["s"])
        sign = -1 if batch.negated else 1  # the stored values are sign * F
        bm = ea.neg(ea.load(batch.low)) if batch.negated else ea.load(st["bm"])
        largest = float(np.finfo(np.float32 if ea.bits == 32 else np.float64).max)
        big = ea.const(largest)
        at = [lambda k, arr=arr, start=es.load(start): ea.at(arr, es.index_sum(start, k))
              for arr, start in zip([batch.f] + batch.w, batch.starts)]
        f_at, w_at = at[0], at[1:]
        with es.if_then(ea.any(ea.cmp(">", bm, big)), rare=True):
            with es.loop(es.index_const(0), es.load(batch.count), "finite") as k:
                v, bound = ea.load(f_at(k)), ea.const(sign * largest)
                ea.store(f_at(k), ea.select(ea.cmp(">" if sign > 0 else "<", v, bound), bound, v))
        shift = ea.select(ea.cmp(">", bm, big), big, bm)
        sums = [ea.slot(ea.const(0)) for _ in range(n)]
        # unweighted, the batch's sum is at least 1 (its maximum's term): terms below the smallest
        # normal number cannot change it at float32/float64 precision and may be flushed to 0
        # weighted, its terms are e^x w made whole by the FMA (`exp_nonpositive_times`: no subnormal e^x)
        with es.loop(es.index_const(0), es.load(batch.count), "batch") as k:
            v = ea.load(f_at(k))
            x = ea.sub(v, shift) if sign > 0 else ea.neg(ea.add(v, shift))
            for c in range(n):
                a, b = (ea.call("exp_nonpositive_times", x, ea.load(w_at[c](k))) if batch.w
                        else (ea.call("exp_nonpositive_flush", x), ea.const(1)))
                ea.store(sums[c], ea.fma(a, b, ea.load(sums[c])))
        self._absorb(ea, st["m"], st["s"], st["c"], bm, [ea.load(p) for p in sums], flush=not batch.w)
        ea.store(st["bm"], _lowest(ea))
        ea.store(batch.low, ea.neg(_lowest(ea)))
        es.store(batch.count, es.index_const(0))

    def _absorb(self, ea, m_ptr, s_ptrs, c_ptrs, f, w, flush=False):
        """(m, s) absorbs exp(f) w, rescaling s when f raises the maximum.

        Branch-free, one exp: e = exp(-|f - m|).  m is never -inf, so f = -inf adds nothing
        (never NaN); a NaN f poisons s and so this row only.  `flush`: unweighted (w and s each
        0 or at least 1), so an e below the smallest normal number changes neither sum at this
        precision and may be 0: no subnormal arithmetic (slow on x86 without AVX-512's vscalef:
        a far maximum slowed the softmin: bench/ab.py's softmin rows)."""
        m = ea.load(m_ptr)
        raise_max = ea.cmp(">", f, m)
        exp = "exp_nonpositive_flush" if flush else "exp_nonpositive"  # (its argument is <= 0)
        e = ea.call(exp, ea.select(raise_max, ea.sub(m, f), ea.sub(f, m)))
        for ptrs, (wk,) in _per_component(ea, [s_ptrs] + ([] if c_ptrs is None else [c_ptrs]), [w]):
            sp = ptrs[0]
            s = ea.load(sp)
            if c_ptrs is None:
                ea.store(sp, ea.select(raise_max, ea.add(ea.mul(s, e), wk), ea.add(s, ea.mul(e, wk))))
            else:  # compensated: rescale both halves of the total on a new maximum
                cp = ptrs[1]
                ea.store(sp, ea.select(raise_max, ea.mul(s, e), s))
                ea.store(cp, ea.select(raise_max, ea.mul(ea.load(cp), e), ea.load(cp)))
                ea.kahan_add(sp, cp, ea.select(raise_max, wk, ea.mul(e, wk)))
        ea.store(m_ptr, ea.select(raise_max, f, m))

    def end_blocks(self, em, ea, states):
        """end_block on each state; the next batch's arrays, from the next j vector on (the next block
        of j), where their stores keep clear of the loads of j data (`unaliased_start`), apart."""
        super().end_blocks(em, ea, states)
        ea.place_runs([(arr, start, st["batch"].j) for st in states if st.get("batch") is not None
                       for arr, start in zip([st["batch"].f] + st["batch"].w, st["batch"].starts)])

    def end_block(self, em, ea, st):
        if st.get("batch") is not None:
            self._flush(ea, st)
            return
        # the block's (bm, bs) is exp(bm) * bs: absorb it as f = bm with weights bs
        bm = ea.load(st["bm"])
        self._absorb(ea, st["m"], st["s"], st["c"], bm, _map_slots(ea, [st["bs"]], ea.load))
        ea.store(st["bm"], _lowest(ea))
        for (p,), _ in _per_component(ea, [st["bs"]]):
            ea.store(p, ea.const(0))

    def merge(self, em, ea, st, other):
        sums = _map_slots(ea, [other["s"], other["c"]], lambda p, c: ea.sub(ea.load(p), ea.load(c)))
        self._absorb(ea, st["m"], st["s"], st["c"], ea.load(other["m"]), sums)

    def n_weights(self, dims):
        return 1 if dims[1] is None else dims[1]

    def _reference_parts(self, F, G):
        """m (M,1) and Σ exp(F - m) w (M, d) in float64."""
        W = np.ones(F.shape[:2] + (1,)) if G is None else np.broadcast_to(G, F.shape[:2] + G.shape[2:])
        if F.shape[1] == 0:
            return np.full((F.shape[0], 1), -_INF), np.zeros((F.shape[0], W.shape[2]))
        with np.errstate(invalid="ignore", over="ignore"):
            m = F.max(axis=1)
            shift = np.where(np.isfinite(m), m, 0.0)
            s = (np.exp(F - shift[:, None, :]) * W).sum(axis=1)
        return shift, s


@register
class LogSumExp(_ShiftedExpSum):
    """log Σ_j exp(F); with formula2=G, log Σ_j exp(F) G."""

    name = "LogSumExp"
    allows_formula2 = True

    def outputs(self, dim_f, dim_g, k):
        return [((1 if dim_g is None else dim_g,), "float")]

    def reference(self, F, G, k):
        m, s = self._reference_parts(F, G)
        with np.errstate(divide="ignore", invalid="ignore"):
            return [m + np.log(s)]

    def finalize(self, em, ea, st):
        m = ea.load(st["m"])
        return [_map_slots(ea, [st["s"]], lambda p: ea.convert(ea.add(m, ea.call("log", ea.load(p))), em))]


@register
class SumSoftMaxWeight(_ShiftedExpSum):
    """Σ_j exp(F) G / Σ_j exp(F); an empty range gives NaN (0/0)."""

    name = "SumSoftMaxWeight"
    needs_formula2 = True

    def n_weights(self, dims):
        return dims[1] + 1

    def weights(self, em, g):
        if isinstance(g, list):
            return [em.const(1)] + g
        es = em.with_lanes(None)

        def at(c):  # 1, then G shifted by one component (G read at 0 for c = 0, discarded)
            first = es.index_cmp("==", c, es.index_const(0))
            return em.select(first, em.const(1), g.at(es.select(first, c, es.index_add(c, -1))))
        return em.wide(g.dim + 1, at)

    def outputs(self, dim_f, dim_g, k):
        return [((dim_g,), "float")]

    def reference(self, F, G, k):
        ones = np.ones(F.shape[:2] + (1,))
        Gb = np.broadcast_to(G, F.shape[:2] + G.shape[2:])
        _, s = self._reference_parts(F, np.concatenate([ones, Gb], axis=2))
        with np.errstate(divide="ignore", invalid="ignore"):
            return [s[:, 1:] / s[:, :1]]

    def finalize(self, em, ea, st):
        s = st["s"]
        if not isinstance(s, list):
            total = ea.load(ea.elem(s, ea.index_const(0)))
            return [em.wide(s.n - 1, lambda c: ea.convert(ea.div(ea.load(ea.elem(s, ea.index_add(c, 1))), total), em))]
        total = ea.load(s[0])
        return [[ea.convert(ea.div(ea.load(p), total), em) for p in s[1:]]]


# ---- Min / Max and their indices ---------------------------------------------------


class _Extreme(Reduction):
    """Component-wise extreme over j; NaN wins (as NumPy's min), the first index on ties
    (a wide F: the state in array slots, one loop over the components)."""

    better = "<"
    with_value, with_index = True, False
    tile_rows = 2
    wide_state = True

    def outputs(self, dim_f, dim_g, k):
        out = []
        if self.with_value:
            out.append(((dim_f,), "float"))
        if self.with_index:
            out.append(((dim_f,), "index"))
        return out

    def init(self, em, ea, dims, k):
        start = em.const(_INF if self.better == "<" else -_INF)
        if em.is_wide(dims[0]):
            return {"v": em.slot_array(dims[0], start),
                    "i": em.slot_array(dims[0], em.index_const(-1), em.index_const(0).type)}
        return {"v": [em.slot(start) for _ in range(dims[0])],
                "i": [em.slot(em.index_const(-1), em.index_const(0).type) for _ in range(dims[0])]}

    def update(self, em, ea, st, f, g, j):
        for (vp, ip), (x,) in _per_component(em, [st["v"], st["i"]], [f]):
            best = em.load(vp)
            take = em.or_(em.cmp(self.better, x, best), em.and_(em.isnan(x), em.not_(em.isnan(best))))
            em.store(vp, em.select(take, x, best))
            em.store(ip, em.select(take, j, em.load(ip)))

    def end_block(self, em, ea, st):
        pass

    def merge(self, em, ea, st, other):
        for (vp, ip, ov, oi), _ in _per_component(em, [st["v"], st["i"], other["v"], other["i"]]):
            v, i, w, k = em.load(vp), em.load(ip), em.load(ov), em.load(oi)
            take = em.and_(_filled(em, k), em.or_(em.not_(_filled(em, i)), _wins(em, self.better, w, k, v, i)))
            em.store(vp, em.select(take, w, v))
            em.store(ip, em.select(take, k, i))

    def finalize(self, em, ea, st):
        out = []
        if self.with_value:
            out.append(_map_slots(em, [st["v"]], em.load))
        if self.with_index:
            out.append(_map_slots(em, [st["i"]], em.load))
        return out

    def reference(self, F, G, k):
        M, N, d = F.shape
        if N == 0:
            v = np.full((M, d), _INF if self.better == "<" else -_INF)
            i = np.full((M, d), -1, dtype=np.int64)
        else:
            v = F.min(axis=1) if self.better == "<" else F.max(axis=1)
            i = F.argmin(axis=1) if self.better == "<" else F.argmax(axis=1)
        return ([v] if self.with_value else []) + ([i.astype(np.int64)] if self.with_index else [])


def _extreme(name, better, with_value, with_index):
    register(type(name, (_Extreme,), {"name": name, "better": better,
                                      "with_value": with_value, "with_index": with_index}))


_extreme("Min", "<", True, False)
_extreme("Max", ">", True, False)
_extreme("ArgMin", "<", False, True)
_extreme("ArgMax", ">", False, True)
_extreme("Min_ArgMin", "<", True, True)
_extreme("Max_ArgMax", ">", True, True)


def _columns(em, tables, values=()):
    """For each component c: column c of each table (a list over ranks of per-component
    slots: lists of pointers, unrolled; or array slots, yielded once inside a loop over
    the components) and the values' component c."""
    first = tables[0][0]
    if isinstance(first, list):
        for c in range(len(first)):
            yield [[row[c] for row in t] for t in tables], [v[c] for v in values]
        return
    with em.components(first.n) as c:
        yield [[em.elem(row, c) for row in t] for t in tables], [v.at(c) for v in values]


def _per_component(em, slots, values=()):
    """As `_columns` for states of one rank: each component's pointer in each of `slots`."""
    for cols, vals in _columns(em, [[s] for s in slots], values):
        yield [col[0] for col in cols], vals


def _map_slots(em, slots, fn):
    """fn of each component's pointers in `slots`: a list, or a Wide for array slots."""
    if isinstance(slots[0], list):
        return [fn(*ptrs) for ptrs in zip(*slots)]
    return em.wide(slots[0].n, lambda c: fn(*[em.elem(s, c) for s in slots]))


def _filled(em, idx):
    """The slot holds an entry (index >= 0)."""
    return em.index_cmp(">=", idx, em.index_const(0))


def _less_nan_last(em, x, y):
    return em.or_(em.cmp("<", x, y), em.and_(em.isnan(y), em.not_(em.isnan(x))))


def _strictly(em, order, x, y):
    """x strictly before y: order '<' or '>' with NaN first (as NumPy's min / max),
    or 'nan_last' (ascending, NaN after every number, as np.sort)."""
    if order == "nan_last":
        return _less_nan_last(em, x, y)
    return em.or_(em.cmp(order, x, y), em.and_(em.isnan(x), em.not_(em.isnan(y))))


def _wins(em, order, x, xi, y, yi):
    """(x, xi) before (y, yi): strictly before, or an equal value (NaN equal to NaN) at a lower j."""
    same = em.or_(em.cmp("==", x, y), em.and_(em.isnan(x), em.isnan(y)))
    return em.or_(_strictly(em, order, x, y), em.and_(same, em.index_cmp("<", xi, yi)))


def get(name):
    red = REDUCTIONS.get(name)
    if red is None:
        raise ReductionError(
            f"reduction_op: unknown reduction {name!r}; expected one of {', '.join(sorted(REDUCTIONS))}"
        )
    return red
