"""A keomlir pass from outside the package: divide once, multiply in the loop.

`a / b` where the divisor b does not depend on j (a parameter such as a kernel's bandwidth,
or a per-row value) becomes `a * Inv(b)`: Inv(b) is then computed once per row (or once per
call) instead of a division for every (i, j) pair, and a multiply is several times cheaper
than a divide.  The result may differ from `a / b` by a rounding (two roundings instead of
one), which is why keomlir's own `simplify` (exact rewrites only) does not do it.

    keomlir ir "Exp(-SqDist(x,y) / (s*s)) * b" -a "x = Vi(3)" -a "y = Vj(3)" -a "s = Pm(1)" \\
        -a "b = Vj(1)" --load-pass examples/passes/reciprocal.py \\
        --passes 'autodiff,simplify,reciprocal{invariant=j},cse' --pass-statistics

Option `invariant`: `j` (default) rewrites divisors that do not depend on j (per row or per
call), `ij` only those that depend on neither i nor j (once per call).
"""

from keomlir.ir import make
from keomlir.ir.node import I, J
from keomlir.passes import NodePass, register_pass

MASKS = {"j": J, "ij": I | J}  # the indices a divisor may not depend on


@register_pass
class Reciprocal(NodePass):
    name = "reciprocal"
    options = {"invariant": "j"}

    def __init__(self, **options):
        super().__init__(**options)
        if self.invariant not in MASKS:
            raise ValueError(f"pass reciprocal: invariant={self.invariant!r}; expected one of {', '.join(MASKS)}")

    def rule(self, node):
        if node.name != "Divide":
            return None
        a, b = node.args
        if b.cat & MASKS[self.invariant]:
            return None  # the divisor changes inside the j loop: nothing to hoist
        return make("Mult", (a, make("Inv", (b,))))

    def rule_name(self, before, after):
        return "a / b -> a * Inv(b)"
