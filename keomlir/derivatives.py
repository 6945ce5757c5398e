"""The derivatives of a reduction, as keomlir reductions built as IR: what the torch and
JAX front ends share.

`Derivatives` builds (and caches) the reductions a reduction's derivatives run:
the fused vector-Jacobian products of reverse mode (`Grad` nodes), the tangents
of forward mode (`Diff` nodes), the pair kernels of Min/Max/KMin; the autodiff
pass expands them like any formula, and they run through the front end's Genred
again, so derivatives of any order work.  `selected_jvp` is the forward mode of
Min/Max/KMin values (the derivative of F at the selected pairs), written over an
array adapter (keomlir/arrays.py).
"""

from __future__ import annotations

from .ir import make, replace_vars
from .ir.ops.base import mk

DIFFERENTIABLE = ("Sum", "LogSumExp", "SumSoftMaxWeight")
# reductions whose values are entries F_ij at selected j: differentiable through them
SELECTING = ("Min", "Max", "Min_ArgMin", "Max_ArgMax", "KMin", "KMin_ArgKMin")


class Derivatives:
    """The derivative reductions of one CompiledReduction, compiled with `genred_class`
    (the front end's Genred, handed down) and cached in `cache`."""

    def __init__(self, genred_class, reduction):
        self.genred_class, self.reduction = genred_class, reduction
        self.cache = {}

    def derived(self, formula, reduction_op, axis, opt_arg=None, recat=None):
        """A Genred of another formula over this one's arguments (their categories
        changed by `recat(pos, dim, cat)` if given), with this one's options."""
        red = self.reduction
        names = red.argument_vars()
        if recat is not None:
            names = {k: _var(*recat(*v.attrs)) for k, v in names.items()}
        return self.genred_class.from_ir(formula, None, reduction_op, axis, opt_arg, names, **red.options)

    def pullback(self, args, output, grad_output, wanted, backend="auto", ranges=None):
        """{position: vector-Jacobian product of the output along `grad_output`} for the
        arguments at `wanted`: one fused kernel per reduced index (`output` is read by
        LogSumExp and SumSoftMaxWeight only)."""
        groups = {}
        for pos in wanted:  # arguments whose gradients reduce over the same index: one kernel
            groups.setdefault(self.grad_axis(pos), []).append(pos)
        grads, lse_value = {}, None
        for positions in groups.values():
            grad_genred, extras, lse = self.gradient(tuple(positions))
            values = {"G": grad_output, "O": output}
            if lse is not None:
                lse_value = lse(*args, backend=backend, ranges=ranges) if lse_value is None else lse_value
                values["L"] = lse_value
            fused = grad_genred(*args, *[values[e] for e in extras], backend=backend, ranges=ranges)
            start = 0
            for pos in positions:
                _, dim, cat = self.reduction.arguments[pos]
                g = fused[:, start:start + dim]
                start += dim
                if cat == 2:  # a parameter: summed over both indices
                    g = g.sum(0).reshape(args[pos].shape)
                grads[pos] = g
        return grads

    def once(self, key, build):
        """The derivative reduction cached under `key`, built by `build()` on first use."""
        found = self.cache.get(key)
        if found is None:
            found = self.cache[key] = build()
        return found

    def gradient(self, positions):
        """One Genred computing the vector-Jacobian products of the arguments at
        `positions` (which share the index reduced in backward) as one concatenated
        output: a fused kernel, one pass over the data.  Returns (genred, the extra
        arguments it takes: 'G' grad_output, 'O' output, 'L' log-normalizer, lse genred)."""
        return self.once(positions, lambda: self._build_gradient(positions))

    def _pair(self, key, derivative):
        """A Genred of `derivative(F, kept)` at one (i, j) pair per row: F with the reduced
        index's variables made row-indexed (`kept` maps an argument's (pos, dim, cat)), so
        the caller gathers the selected rows of those variables and scatters results back."""
        def build():
            red = self.reduction
            reduced = 1 if red.axis == 1 else 0

            def kept(pos, dim, cat):
                return pos, dim, 1 - reduced if cat == reduced else cat

            formula = derivative(replace_vars(red.formula, kept), kept)
            return self.derived(formula, "Sum", red.axis, recat=kept)

        return self.once(key, build)

    def pair_gradient(self):
        """For selecting reductions: the vector-Jacobian product of F at the selected pairs
        (cotangent: a new variable after the arguments)."""
        red = self.reduction
        cotangent_cat = 0 if red.axis == 1 else 1

        def vjps(F, kept):
            E = _var(len(red.arguments), red.formula.dim, cotangent_cat)
            return _concat([mk("Grad", F, E, attrs=(_var(*kept(*a)),)) for a in red.arguments])

        return self._pair("pair", vjps)

    def pair_tangent(self):
        """For selecting reductions in forward mode: the derivative of F along every
        argument's tangent (tangents after the arguments, categories as their arguments')."""
        n = len(self.reduction.arguments)

        def tangent(F, kept):
            formula = None
            for p, d, c in self.reduction.arguments:
                term = mk("Diff", F, _var(n + p, d, kept(p, d, c)[2]), attrs=(_var(*kept(p, d, c)),))
                formula = term if formula is None else mk("Add", formula, term)
            return formula

        return self._pair("pair_jvp", tangent)

    def grad_axis(self, pos):
        red = self.reduction
        out_cat = 0 if red.axis == 1 else 1
        return 1 - red.axis if red.arguments[pos][2] == 1 - out_cat else red.axis

    def _terms(self, what):
        """(reduction name, number of arguments, category of the output rows, F, F2) of a
        differentiable reduction; other reductions have no `what`."""
        red = self.reduction
        if red.reduction_op not in DIFFERENTIABLE:
            raise NotImplementedError(f"reduction {red.reduction_op} has no {what} in this version of keomlir")
        return red.reduction_op, len(red.arguments), 0 if red.axis == 1 else 1, red.formula, red.formula2

    def _build_gradient(self, positions):
        red = self.reduction
        name, n, out_cat, F, F2 = self._terms("gradient")

        def grad(f, v, e):
            return mk("Grad", f, e, attrs=(v,))

        def vjp(V):
            if name == "Sum":
                return grad(F, V, _var(n, F.dim, out_cat))
            if name == "LogSumExp" and F2 is None:
                return grad(F, V, mk("Mult", mk("Exp", mk("Subtract", F, _var(n + 1, 1, out_cat))),
                                     _var(n, 1, out_cat)))
            G, O = _var(n, F2.dim, out_cat), _var(n + 1, F2.dim, out_cat)
            if name == "LogSumExp":
                W = mk("Mult", mk("Exp", mk("Subtract", F, O)), G)
                return mk("Add", grad(F, V, mk("Scalprod", W, F2)), grad(F2, V, W))
            # SumSoftMaxWeight: p_ij = exp(F_ij - L_i), dO = sum_j p (dG + (G - O) dF)
            P = mk("Exp", mk("Subtract", F, _var(n + 2, 1, out_cat)))
            return mk("Add", grad(F, V, mk("Mult", P, mk("Scalprod", G, mk("Subtract", F2, O)))),
                      grad(F2, V, mk("Mult", P, G)))

        formula = _concat([vjp(_var(*red.arguments[pos])) for pos in positions])
        extras = {"Sum": ["G"], "LogSumExp": ["G", "O"], "SumSoftMaxWeight": ["G", "O", "L"]}[name]
        genred = self.derived(formula, "Sum", self.grad_axis(positions[0]))
        lse = self.derived(F, "LogSumExp", red.axis) if "L" in extras else None
        return genred, extras, lse

    # ---- forward mode (torch.func.jvp / jacfwd): keomlir reductions of Diff(...) -------------
    def tangent(self, positions):
        """One Genred computing the directional derivative of the output along the
        tangents of the arguments at `positions` (tangents are new variables of the same
        categories, after the arguments): Diff nodes expanded by the autodiff pass.
        Returns (genred, extras taken after the tangents: 'O' output, 'L' log-normalizer, lse)."""
        return self.once(("jvp", positions), lambda: self._build_tangent(positions))

    def _build_tangent(self, positions):
        red = self.reduction
        name, n, out_cat, F, F2 = self._terms("forward-mode derivative")
        tangents = [(_var(*red.arguments[pos]), _var(n + k, *red.arguments[pos][1:]))
                    for k, pos in enumerate(positions)]

        def diff(f):  # the derivative of f along every tangent
            out = None
            for v, t in tangents:
                d = mk("Diff", f, t, attrs=(v,))
                out = d if out is None else mk("Add", out, d)
            return out

        extra = n + len(positions)
        if name == "Sum":
            formula, extras = diff(F), []
        elif name == "LogSumExp" and F2 is None:  # d log sum_j e^F = sum_j e^(F - O) dF
            formula, extras = mk("Mult", mk("Exp", mk("Subtract", F, _var(extra, 1, out_cat))), diff(F)), ["O"]
        elif name == "LogSumExp":  # O = log sum_j e^F G: dO = sum_j e^(F - O) (dF G + dG)
            O = _var(extra, F2.dim, out_cat)
            formula = mk("Mult", mk("Exp", mk("Subtract", F, O)), mk("Add", mk("Mult", diff(F), F2), diff(F2)))
            extras = ["O"]
        else:  # SumSoftMaxWeight, p = e^(F - L): dO = sum_j p (dG + (G - O) dF)
            O, L = _var(extra, F2.dim, out_cat), _var(extra + 1, 1, out_cat)
            formula = mk("Mult", mk("Exp", mk("Subtract", F, L)),
                         mk("Add", diff(F2), mk("Mult", mk("Subtract", F2, O), diff(F))))
            extras = ["O", "L"]
        genred = self.derived(formula, "Sum", red.axis)
        lse = self.derived(F, "LogSumExp", red.axis) if "L" in extras else None
        return genred, extras, lse


def _var(pos, dim, cat):
    return make("Var", (), (pos, dim, cat))


def _concat(parts):
    out = parts[0]
    for part in parts[1:]:
        out = mk("Concat", out, part)
    return out


def selected_indices(d, args, results, backend, ranges):
    """The indices a selecting reduction chose (recomputed for Min / Max / KMin alone, which
    return no indices); `d` is its Derivatives."""
    red = d.reduction
    arg_name = {"Min": "ArgMin", "Max": "ArgMax", "KMin": "ArgKMin"}.get(red.reduction_op)
    if arg_name is None:
        return results[-1]
    argk = d.once(("indices", arg_name), lambda: d.derived(red.formula, arg_name, red.axis, red.opt_arg))
    return argk(*args, backend=backend, ranges=ranges)


def selection(d, args, results, backend, ranges):
    """(the category of the reduced index, the selected indices as (rows, slots, dimension of F))
    of a call of a selecting reduction."""
    red = d.reduction
    indices = selected_indices(d, args, results, backend, ranges)
    return 1 if red.axis == 1 else 0, indices.reshape(results[0].shape[0], -1, red.formula.dim)


def selected_jvp(d, xp, args, results, tangents, backend, ranges):
    """Forward mode of Min/Max/KMin values (arrays of adapter `xp`, None for a tangent that
    is zero): the derivative of F along the tangents at the selected (i, j) pairs, one call
    of the pair kernel `pair_tangent` per selected slot and component, on gathered rows
    (the pair kernel of `pair_gradient` read as a Jacobian row by row would cost more).
    Slots with no j (index -1: an empty block-sparse row, or fewer j than K) get 0."""
    red = d.reduction
    reduced, idx = selection(d, args, results, backend, ranges)
    pair, values, dim_f = d.pair_tangent(), results[0], red.formula.dim
    tangents = [xp.zeros_like(a) if t is None else t for t, a in zip(tangents, args)]
    parts = []  # out of place: the transforms of torch.func and JAX may batch or trace this function
    for slot in range(idx.shape[1]):
        for c in range(dim_f):
            sel = idx[:, slot, c]
            found = sel >= 0
            sel = xp.clamp_min(sel, 0)
            gathered = [a[sel] if cat == reduced else a for a, (_, _, cat) in zip(args, red.arguments)]
            moved = [t[sel] if cat == reduced else t for t, (_, _, cat) in zip(tangents, red.arguments)]
            value = pair(*gathered, *moved, backend=backend)[:, c]
            parts.append(xp.where(found, value, xp.zeros_like(value)))
    return xp.stack(parts).T.reshape(values.shape)
