"""Loop-form lowering of wide nodes (dimension above the emitter's `wide_threshold`).

Unrolling every operation into one SSA value per component makes the code (and
LLVM's compile time) grow with a variable's width, and a wide value cannot live
in registers anyway.  Here a wide node is a `Wide`: a function emitting component
c where the builder stands, so chains of element-wise operations fuse into the
one loop over components of their consumer (a vector reduction such as SqDist,
or the Sum reduction's state update).  Covered in loop form:

- Var (i, j and parameter variables of any width);
- every element-wise operation (`Elementwise`), wide operands with scalars broadcast;
- Sum, SqNorm2, Norm2, Scalprod, SqDist, Max, Min of wide operands (to a scalar).

Any other operation with a wide operand falls back to today's unrolled lowering
(its wide operands unrolled with `as_list`): correct, only slower to compile.
Formulas whose dimensions are all at most the threshold never reach this module,
so their code is unchanged.
"""

from __future__ import annotations

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
    """The value of `node` in loop form (a Wide, or a one-value list for a
    reduction of wide operands), or None to use the op's unrolled lowering."""
    if em.wide_threshold is None:
        return None
    any_wide = any(isinstance(a, Wide) or len(a) > em.wide_threshold for a in args)
    if not any_wide and not em.is_wide(node.dim):
        return None
    if isinstance(node.op, Elementwise):
        return _elementwise(em, node, args)
    rule = _RULES.get(node.name)
    if rule is None:
        return None
    dim = max(a.dim if isinstance(a, Wide) else len(a) for a in args)
    return [rule(em, dim, *[_component(em, a) for a in args])]


def _component(em, a):
    """comp(c) for a Wide, a broadcast scalar, or a list (stored in an array first)."""
    if not isinstance(a, Wide) and len(a) == 1:
        return lambda c: a[0]
    return as_wide(em, a).at


def _elementwise(em, node, args):
    comps = [_component(em, a) for a in args]
    op, attrs = node.op, node.attrs
    return em.wide(node.dim, lambda c: op.lower(em, [[f(c)] for f in comps], attrs)[0])


def fold(em, dim, term, combine):
    """combine-fold of term(c) over c in [0, dim), in UNROLL interleaved partial results."""
    b = em.b
    main = dim - dim % UNROLL
    accs = [em.slot(term(c64(u))) for u in range(UNROLL)]
    with counted_loop(b, c64(UNROLL), c64(main), "c", UNROLL) as c:
        for u, acc in enumerate(accs):
            em.store(acc, combine(em.load(acc), term(b.add(c, c64(u)))))
    vals = [em.load(acc) for acc in accs]
    for c in range(main, dim):
        vals[c - main] = combine(vals[c - main], term(c64(c)))
    while len(vals) > 1:  # pairwise, as the unrolled sums
        vals = [combine(vals[k], vals[k + 1]) if k + 1 < len(vals) else vals[k] for k in range(0, len(vals), 2)]
    return vals[0]


def _sum(em, x, dim):
    return fold(em, dim, x, em.add)


def _extreme(em, x, dim, better):
    """The first component winning `better`, NaN winning (as the unrolled Max/Min):
    one sequential loop, so ties and NaN keep today's order."""
    best = em.slot(x(c64(0)))
    with counted_loop(em.b, c64(1), c64(dim), "c") as c:
        v, cur = x(c), em.load(best)
        take = em.or_(em.cmp(better, v, cur), em.and_(em.isnan(v), em.not_(em.isnan(cur))))
        em.store(best, em.select(take, v, cur))
    return em.load(best)


def _make_reducers():
    def sq(em, dim, f):
        return fold(em, dim, lambda c: _square(em, f(c)), em.add)

    def _square(em, v):
        return em.mul(v, v)

    return {
        "Sum": lambda em, dim, x: _sum(em, x, dim),
        "SqNorm2": lambda em, dim, x: sq(em, dim, x),
        "Norm2": lambda em, dim, x: em.call("sqrt", sq(em, dim, x)),
        "Scalprod": lambda em, dim, x, y: fold(em, dim, lambda c: em.mul(x(c), y(c)), em.add),
        "SqDist": lambda em, dim, x, y: sq(em, dim, lambda c: em.sub(x(c), y(c))),
        "Max": lambda em, dim, x: _extreme(em, x, dim, ">"),
        "Min": lambda em, dim, x: _extreme(em, x, dim, "<"),
    }


_RULES = _make_reducers()
