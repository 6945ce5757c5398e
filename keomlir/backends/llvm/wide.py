"""Loop-form lowering of wide nodes (dimension above the emitter's `wide_threshold`).

Unrolling every operation into one SSA value per component makes the code (and
LLVM's compile time) grow with a variable's width, and a wide value cannot live
in registers anyway.  Here a wide node is a `Wide`: a function emitting component
c where the builder stands, so chains of element-wise operations fuse into the
one loop over components of their consumer (a vector reduction such as SqDist,
or the Sum reduction's state update).  Covered in loop form:

- Var (i, j and parameter variables of any width);
- every element-wise operation (`Elementwise`), wide operands with scalars broadcast;
- Sum, SqNorm2, Norm2, Scalprod, SqDist, Max, Min, ArgMax, ArgMin, WeightedSqNorm,
  WeightedSqDist of wide operands (to a scalar);
- the index operations Elem, Extract, Concat and their adjoints ElemT, ExtractT, SumT,
  OneHot, Zero, and Normalize (what gradients of wide formulas are made of);
- the contractions (MatVecMult, VecMatMult, TensorProd, Kron, TensorDot): each output
  component a loop over the contracted components, indices computed from strides.

Any other operation with a wide operand (the complex-number family) falls back to
the unrolled lowering (its wide operands unrolled with `as_list`): correct, only
slower to compile.  The reductions keep wide states (F, or the weights G) in array
slots themselves (`Reduction.wide_state`).
Formulas whose dimensions are all at most the threshold never reach this module,
so their code is unchanged.
"""

from __future__ import annotations

import math

from llvmlite import ir

from ...ir.ops.elementwise import Elementwise
from .emitter import I64, Wide, counted_loop

UNROLL = 4  # independent partial sums in vector reductions: latency hidden, shorter error chains


def c64(v):
    return ir.Constant(I64, v)


def as_list(em, v):
    """A value as today's list of components (a wide one unrolled)."""
    if isinstance(v, Wide):
        return [v.at(c64(c)) for c in range(v.dim)]
    return v


def as_wide(em, vals):
    """A list of components as a Wide reading them from a stack array."""
    if isinstance(vals, Wide):
        return vals
    arr = em.array(vals[0].type, len(vals))
    for c, v in enumerate(vals):
        em.store(em.at(arr, c64(c)), v)
    return em.wide(len(vals), lambda c: em.load(em.at(arr, c)))


def materialize(em, w):
    """A wide value computed once into a stack array (for nodes used in an inner loop)."""
    arr = em.array(em.t, w.dim)
    with em.components(w.dim) as c:
        em.store(em.at(arr, c), w.at(c))
    return em.wide(w.dim, lambda c: em.load(em.at(arr, c)), cheap=True)


def splat(em, w):
    """A wide scalar value broadcast to em's lanes (parameters shared by vector rows)."""
    return em.wide(w.dim, lambda c: em.splat(w.at(c)), cheap=w.cheap)


def lower(em, node, args):
    """The value of `node` in loop form (a Wide, or a list for a narrow result of
    wide operands), or None to use the op's unrolled lowering."""
    if em.wide_threshold is None:
        return None
    any_wide = any(isinstance(a, Wide) or len(a) > em.wide_threshold for a in args)
    if not any_wide and not em.is_wide(node.dim):
        return None
    if isinstance(node.op, Elementwise):
        return _elementwise(em, node, args)
    rule = _RULES.get(node.name)
    return None if rule is None else rule(em, node, args)


def _component(em, a):
    """comp(c) for a Wide, a broadcast scalar, or a list (stored in an array first;
    a constant c reads the list itself)."""
    if isinstance(a, Wide):
        return a.at
    if len(a) == 1:
        return lambda c: a[0]
    at = as_wide(em, a).at
    return lambda c: a[c.constant] if isinstance(c, ir.Constant) else at(c)


def _reread(em, a):
    """comp(c) of an operand read more than once per component: a computed wide value
    is materialized first, rather than recomputed at every read."""
    if isinstance(a, Wide) and not a.cheap:
        return materialize(em, a).at
    return _component(em, a)


def _result(em, dim, at, cheap=False):
    """A node's value from its component function: a Wide if `dim` is wide, else the list."""
    if em.is_wide(dim):
        return em.wide(dim, at, cheap)
    return [at(c64(c)) for c in range(dim)]


def _elementwise(em, node, args):
    comps = [_component(em, a) for a in args]
    op, attrs = node.op, node.attrs
    return em.wide(node.dim, lambda c: op.lower(em, [[f(c)] for f in comps], attrs)[0])


# ---- integer index arithmetic (constants folded here: narrow results stay static) -------


def _iadd(b, x, k):
    if isinstance(k, int) and k == 0:
        return x
    if isinstance(x, ir.Constant) and isinstance(k, int):
        return c64(x.constant + k)
    return b.add(x, k if not isinstance(k, int) else c64(k))


def _clamp(b, x, lo, hi):
    """x limited to [lo, hi]: a safe index for a component a select then discards."""
    if isinstance(x, ir.Constant):
        return c64(min(max(x.constant, lo), hi))
    x = b.select(b.icmp_signed("<", x, c64(lo)), c64(lo), x)
    return b.select(b.icmp_signed(">", x, c64(hi)), c64(hi), x)


def _inside(em, c, lo, hi):
    """lo <= c < hi, as an i1 (a constant for a constant c)."""
    if isinstance(c, ir.Constant):
        return ir.Constant(ir.IntType(1), int(lo <= c.constant < hi))
    b = em.b
    return b.and_(b.icmp_signed(">=", c, c64(lo)), b.icmp_signed("<", c, c64(hi)))


def _pick(em, cond, then, other):
    if isinstance(cond, ir.Constant):
        return then() if cond.constant else other()
    return em.select(cond, then(), other())


def _float_index(em, c):
    """Component index c (an i64) as a value of em's type."""
    if isinstance(c, ir.Constant):
        return em.const(c.constant)
    return em.splat(em.b.sitofp(c, em.scalar))


# ---- reductions of wide operands to a scalar ----------------------------------------------


def fold(em, dim, term, combine):
    """combine-fold of term(c) over c in [0, dim), in UNROLL interleaved partial results
    (a pairwise tree of the terms when dim is too small for the loop)."""
    if dim < 2 * UNROLL:
        return _tree(em, [term(c64(c)) for c in range(dim)], combine)
    b = em.b
    main = dim - dim % UNROLL
    accs = [em.slot(term(c64(u))) for u in range(UNROLL)]
    with counted_loop(b, c64(UNROLL), c64(main), "c", UNROLL) as c:
        for u, acc in enumerate(accs):
            em.store(acc, combine(em.load(acc), term(b.add(c, c64(u)))))
    vals = [em.load(acc) for acc in accs]
    for c in range(main, dim):
        vals[c - main] = combine(vals[c - main], term(c64(c)))
    return _tree(em, vals, combine)


def _tree(em, vals, combine):
    while len(vals) > 1:  # pairwise, as the unrolled sums
        vals = [combine(vals[k], vals[k + 1]) if k + 1 < len(vals) else vals[k] for k in range(0, len(vals), 2)]
    return vals[0]


def _extreme(em, x, dim, better):
    """(value, index) of the first component winning `better`, NaN winning (as the
    unrolled Max/Min/ArgMax/ArgMin): one sequential loop, so ties and NaN keep their order."""
    best, idx = em.slot(x(c64(0))), em.slot(em.const(0))
    with counted_loop(em.b, c64(1), c64(dim), "c") as c:
        v, cur = x(c), em.load(best)
        take = em.or_(em.cmp(better, v, cur), em.and_(em.isnan(v), em.not_(em.isnan(cur))))
        em.store(best, em.select(take, v, cur))
        em.store(idx, em.select(take, _float_index(em, c), em.load(idx)))
    return em.load(best), em.load(idx)


def _weighted(em, dim, s, f, ds):
    """WeightedSqNorm of f (a component function) with weight s: scalar, diagonal or full."""
    if ds == dim * dim:
        f = materialize(em, em.wide(dim, f)).at
        return fold(em, dim, lambda k: em.mul(f(k), fold(
            em, dim, lambda l: em.mul(s(_iadd(em.b, em.b.mul(k, c64(dim)), l)), f(l)), em.add)), em.add)
    return fold(em, dim, lambda c: em.mul(s(c), _square(em, f(c))), em.add)


def _weighted_rule(em, node, args):
    s, *fs = (_component(em, a) for a in args)
    dim = max(a.dim for a in node.args[1:])
    f = fs[0] if len(fs) == 1 else (lambda c: em.sub(fs[0](c), fs[1](c)))
    return [_weighted(em, dim, s, f, node.args[0].dim)]


def _square(em, v):
    return em.mul(v, v)


def _scalar(fn):
    """A rule from fn(em, dim, *component functions) -> one value: a reduction to a scalar."""
    def rule(em, node, args):
        dim = max(a.dim if isinstance(a, Wide) else len(a) for a in args)
        return [fn(em, dim, *[_component(em, a) for a in args])]
    return rule


def _sq(em, dim, f):
    return fold(em, dim, lambda c: _square(em, f(c)), em.add)


# ---- index operations and the adjoints gradients produce ------------------------------------


def _elem(em, node, args):
    (x,), (k,) = args, node.attrs
    return [x.at(c64(k)) if isinstance(x, Wide) else x[k]]


def _extract(em, node, args):
    (x,), (start, n) = args, node.attrs
    if not isinstance(x, Wide):
        return _result(em, n, _component(em, x[start:start + n]))
    return _result(em, n, lambda c: x.at(_iadd(em.b, c, start)), x.cheap)


def _concat(em, node, args):
    """Component c of a (c < dim a) or of b: both read at clamped indices, one selected
    (branch-free, so the consumer's loop vectorizes)."""
    a, b = (_component(em, x) for x in args)
    da, db = (x.dim for x in node.args)

    def at(c):
        return _pick(em, _inside(em, c, 0, da), lambda: a(_clamp(em.b, c, 0, da - 1)),
                     lambda: b(_clamp(em.b, _iadd(em.b, c, -da), 0, db - 1)))
    return _result(em, node.dim, at)


def _extract_t(em, node, args):
    (f,), (start, dim) = args, node.attrs
    n, get, zero = node.args[0].dim, _component(em, f), em.const(0)
    return _result(em, dim, lambda c: _pick(em, _inside(em, c, start, start + n),
                                            lambda: get(_clamp(em.b, _iadd(em.b, c, -start), 0, n - 1)),
                                            lambda: zero))


def _elem_t(em, node, args):
    (f,), (dim, m) = args, node.attrs
    zero = em.const(0)
    return _result(em, dim, lambda c: _pick(em, _inside(em, c, m, m + 1), lambda: f[0], lambda: zero), cheap=True)


def _sum_t(em, node, args):
    return _result(em, node.attrs[0], lambda c: args[0][0], cheap=True)


def _one_hot(em, node, args):
    r = em.call("round", args[0][0])
    return _result(em, node.attrs[0], lambda c: em.to_float(em.cmp("==", r, _float_index(em, c))), cheap=True)


def _normalize(em, node, args):
    (x,) = args
    f, dim = _reread(em, x), node.dim
    n2 = _sq(em, dim, f)
    r = em.select(em.cmp("==", n2, em.const(0)), em.const(0), em.div(em.const(1), em.call("sqrt", n2)))
    return em.wide(dim, lambda c: em.mul(f(c), r))


# ---- contractions: out[o] = sum_k f[F(o) + F'(k)] g[G(o) + G'(k)] ------------------------------


def _strides(shape):
    return [math.prod(shape[t + 1:]) for t in range(len(shape))]


def _offsets(b, idx, shape, strides):
    """For a flat C-order index into `shape`, its offset along each list of axis strides
    (idx decomposed by division, adjacent axes that stay contiguous merged first)."""
    axes = [(n, list(s)) for n, *s in zip(shape, *strides) if n > 1]
    merged = []
    for n, s in axes:
        if merged and all(p == q * n for p, q in zip(merged[-1][1], s)):
            merged[-1] = (merged[-1][0] * n, s)
        else:
            merged.append((n, s))
    if isinstance(idx, ir.Constant):
        coords = [idx.constant // math.prod(n for n, _ in merged[t + 1:]) % n for t, (n, _) in enumerate(merged)]
        return [c64(sum(x * s[k] for x, (_, s) in zip(coords, merged))) for k in range(len(strides))]
    offs = [None] * len(strides)
    inner = 1
    for t in range(len(merged) - 1, -1, -1):
        n, s = merged[t]
        coord = idx if inner == 1 else b.udiv(idx, c64(inner))
        if t > 0:
            coord = b.urem(coord, c64(n))
        inner *= n
        for k, stride in enumerate(s):
            if stride:
                term = coord if stride == 1 else b.mul(coord, c64(stride))
                offs[k] = term if offs[k] is None else b.add(offs[k], term)
    return [c64(0) if o is None else o for o in offs]


def _contraction(em, node, args):
    dimf, dimg, contf, contg, perm = node.op.layout(*(a.dim for a in node.args), node.attrs)
    sf, sg = _strides(dimf), _strides(dimg)
    freef = [a for a in range(len(dimf)) if a not in contf]
    freeg = [a for a in range(len(dimg)) if a not in contg]
    res = [(dimf[a], sf[a], 0) for a in freef] + [(dimg[a], 0, sg[a]) for a in freeg]
    out = list(res) if perm is None else [None] * len(res)
    for k, p in enumerate(perm or ()):
        out[p] = res[k]
    cont = [(dimf[a], sf[a], sg[b]) for a, b in zip(contf, contg)]
    n_terms = math.prod(n for n, _, _ in cont)
    f, g = (_reread(em, a) for a in args)
    b = em.b

    def at(o):
        fo, go = _offsets(b, o, *_axes(out))

        def term(k):
            fk, gk = _offsets(b, k, *_axes(cont))
            return em.mul(f(_plus(b, fo, fk)), g(_plus(b, go, gk)))
        return fold(em, n_terms, term, em.add)
    return _result(em, node.dim, at)


def _axes(axes):
    return [n for n, _, _ in axes], [[s for _, s, _ in axes], [s for _, _, s in axes]]


def _plus(b, x, y):
    if isinstance(y, ir.Constant):
        return _iadd(b, x, y.constant)
    if isinstance(x, ir.Constant):
        return _iadd(b, y, x.constant)
    return b.add(x, y)


_RULES = {
    "Sum": _scalar(lambda em, dim, x: fold(em, dim, x, em.add)),
    "SqNorm2": _scalar(_sq),
    "Norm2": _scalar(lambda em, dim, x: em.call("sqrt", _sq(em, dim, x))),
    "Scalprod": _scalar(lambda em, dim, x, y: fold(em, dim, lambda c: em.mul(x(c), y(c)), em.add)),
    "SqDist": _scalar(lambda em, dim, x, y: _sq(em, dim, lambda c: em.sub(x(c), y(c)))),
    "Max": _scalar(lambda em, dim, x: _extreme(em, x, dim, ">")[0]),
    "Min": _scalar(lambda em, dim, x: _extreme(em, x, dim, "<")[0]),
    "ArgMax": _scalar(lambda em, dim, x: _extreme(em, x, dim, ">")[1]),
    "ArgMin": _scalar(lambda em, dim, x: _extreme(em, x, dim, "<")[1]),
    "WeightedSqNorm": _weighted_rule,
    "WeightedSqDist": _weighted_rule,
    "Elem": _elem,
    "Extract": _extract,
    "Concat": _concat,
    "ExtractT": _extract_t,
    "ElemT": _elem_t,
    "SumT": _sum_t,
    "Zero": lambda em, node, args: em.wide(node.dim, lambda c: em.const(0), cheap=True),
    "OneHot": _one_hot,
    "Normalize": _normalize,
    **dict.fromkeys(("MatVecMult", "VecMatMult", "TensorProd", "Kron", "TensorDot"), _contraction),
}
