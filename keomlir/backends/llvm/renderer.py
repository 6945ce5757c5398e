"""Program -> LLVM IR (llvmlite.ir), the loop nest of one reduction kernel.

    void keomlir_kernel(i64 i_begin, i64 i_end, i64 n_j, T** args, i8** outs)

args[p] points to argument p, a C-contiguous (rows, dim) array (a single row for
parameters); outs[k] to output k, C-contiguous with one row per i.  For each i
the kernel loads the i-variables once, evaluates every node that does not depend
on j (parameter-only nodes once per call), then walks j in blocks of BLOCK,
evaluating the j-dependent nodes and updating the reduction state.  Each
operation's `lower` produces the values; this module only places them.
"""

from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from ...ir.node import I, J
from .emitter import Emitter

KERNEL_NAME = "keomlir_kernel"
BLOCK = 512  # j per block: the unit of compensated summation
I64 = ir.IntType(64)
FLOAT_TYPES = {"float32": ir.FloatType(), "float64": ir.DoubleType()}


@contextmanager
def counted_loop(b, start, stop, name, step=1):
    """for (k = start; k < stop; k += step): yields the phi of k inside the body."""
    pre = b.block
    head = b.append_basic_block(f"{name}.head")
    body = b.append_basic_block(f"{name}.body")
    done = b.append_basic_block(f"{name}.done")
    b.branch(head)
    b.position_at_end(head)
    k = b.phi(I64, name=name)
    k.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", k, stop), body, done)
    b.position_at_end(body)
    yield k
    k.add_incoming(b.add(k, ir.Constant(I64, step)), b.block)
    b.branch(head)
    b.position_at_end(done)


class _Values:
    """Component values of nodes, emitted on first use in the current scope."""

    def __init__(self, em, load_var):
        self.em = em
        self.load_var = load_var
        self.memo = {}

    def get(self, node):
        found = self.memo.get(id(node))
        if found is not None:
            return found
        for n in node.walk():
            if id(n) in self.memo:
                continue
            if n.name == "Var":
                vals = self.load_var(n)
            else:
                vals = n.op.lower(self.em, [self.memo[id(a)] for a in n.args], n.attrs)
                if len(vals) != n.dim:  # a lowering bug, caught at compile time
                    raise AssertionError(f"{n.name} lowered to {len(vals)} values, expected {n.dim}")
            self.memo[id(n)] = vals
        return self.memo[id(node)]

    def forget(self, pred):
        self.memo = {k: v for k, v in self.memo.items() if not pred(k)}


def render(program, dtype, acc_dtype=None, sum_scheme="block_sum"):
    """An llvmlite module holding the kernel of `program` for `dtype`."""
    for _, root in program.roots():
        for n in root.walk():
            if not n.op.lowers:
                raise NotImplementedError(
                    f"{n.name} must be rewritten by the autodiff pass before code generation"
                )
    t = FLOAT_TYPES[dtype]
    module = ir.Module(name="keomlir")
    fn_type = ir.FunctionType(ir.VoidType(), [I64, I64, I64, t.as_pointer().as_pointer(),
                                              ir.IntType(8).as_pointer().as_pointer()])
    fn = ir.Function(module, fn_type, KERNEL_NAME)
    for a in fn.args:
        a.add_attribute("noundef")
    i_begin, i_end, n_j, args_ptr, outs_ptr = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    em = Emitter(b, t)
    em.scheme = sum_scheme
    ea = em.with_type(FLOAT_TYPES[acc_dtype or dtype])
    ea.scheme = sum_scheme
    red = program.red
    f_root, g_root = program.formula, program.formula2
    dims = (f_root.dim, None if g_root is None else g_root.dim)

    arg_base = {}

    def base(pos):
        if pos not in arg_base:
            with b.goto_block(em.entry):
                arg_base[pos] = b.load(b.gep(args_ptr, [ir.Constant(I64, pos)]))
        return arg_base[pos]

    cur = {"i": None, "j": None}

    def load_var(n):
        pos, dim, cat = n.attrs
        row = {0: cur["i"], 1: cur["j"], 2: ir.Constant(I64, 0)}[cat]
        start = b.mul(row, ir.Constant(I64, dim))
        return [b.load(b.gep(base(pos), [b.add(start, ir.Constant(I64, c))])) for c in range(dim)]

    values = _Values(em, load_var)
    roots = [r for _, r in program.roots()]

    def emit_scope(mask):
        """Emit every node whose indices are within `mask`, operands first."""
        for r in roots:
            for n in r.walk():
                if n.cat & ~mask == 0:
                    values.get(n)

    all_nodes = [n for r in roots for n in r.walk()]
    j_nodes = {id(n) for n in all_nodes if n.cat & J}
    i_nodes = {id(n) for n in all_nodes if n.cat & (I | J)}
    emit_scope(0)  # parameters and constants: once per call
    outputs = red.outputs(dims[0], dims[1], program.opt_arg)
    out_rows = []
    for k, (shape, kind) in enumerate(outputs):
        width = 1
        for s in shape:
            width *= s
        ty = I64 if kind == "index" else t
        raw = b.load(b.gep(outs_ptr, [ir.Constant(I64, k)]))
        out_rows.append((b.bitcast(raw, ty.as_pointer()), width))

    with counted_loop(b, i_begin, i_end, "i") as i:
        cur["i"] = i
        emit_scope(I)
        state = red.init(em, ea, dims, program.opt_arg)
        with counted_loop(b, ir.Constant(I64, 0), n_j, "jb", BLOCK) as jb:
            room = b.sub(n_j, jb)
            j_end = b.add(jb, b.select(b.icmp_signed("<", room, ir.Constant(I64, BLOCK)),
                                       room, ir.Constant(I64, BLOCK)))
            with counted_loop(b, jb, j_end, "j") as j:
                cur["j"] = j
                f = values.get(f_root)
                g = values.get(g_root) if g_root is not None else None
                red.update(em, ea, state, f, g, j)
                values.forget(lambda key: key in j_nodes)
            red.end_block(em, ea, state)
        results = red.finalize(em, ea, state)
        for (ptr, width), vals in zip(out_rows, results):
            row = b.mul(i, ir.Constant(I64, width))
            for c, v in enumerate(vals):
                b.store(v, b.gep(ptr, [b.add(row, ir.Constant(I64, c))]))
        values.forget(lambda key: key in i_nodes)
    b.ret_void()
    return module
