"""`pykeops.common.utils`: messages, conversions between reduction axes and variable
categories, batch-shape broadcasting and the per-front-end toolboxes."""

from __future__ import annotations

from .. import config
from ..numpy.utils import numpytools

c_type = {"float16": "half2", "float32": "float", "float64": "double"}  # the C types pykeops compiles with


def axis2cat(axis):
    """The category of the variables indexing the result of a reduction over `axis`:
    reducing over i (axis 0) leaves j (category 1), and the other way around."""
    if axis not in (0, 1):
        raise ValueError(f"axis2cat: axis must be 0 or 1, got {axis!r}")
    return 1 - axis


def cat2axis(cat):
    """The reduction axis that leaves variables of category `cat` (0: i, 1: j) indexing the result."""
    if cat not in (0, 1):
        raise ValueError(f"cat2axis: the category must be 0 (Vi) or 1 (Vj), got {cat!r}")
    return 1 - cat


def get_tools(lang):
    """The toolbox of a front end: `numpytools` for 'numpy', `torchtools` for 'torch' / 'pytorch'."""
    if lang == "numpy":
        return numpytools()
    if lang in ("torch", "pytorch"):
        from ..torch.utils import torchtools  # optional: only with torch installed

        return torchtools()
    raise ValueError(f"get_tools: lang must be 'numpy', 'torch' or 'pytorch', got {lang!r}")


def WarmUpGpu(lang):  # noqa: N802  (pykeops's name)
    """Compile and run a small reduction twice in the front end `lang` (before timings)."""
    tools = get_tools(lang)
    routine = tools.Genred("SqDist(x,y)", ["x = Vi(1)", "y = Vj(1)"], reduction_op="Sum", axis=1)
    x = tools.array([[0.25 * k] for k in range(10)], "float32", None)
    for _ in range(2):
        routine(x, x)


def max_tuple(a, b):
    return tuple(max(p, q) for p, q in zip(a, b))


def check_broadcasting(dims_1, dims_2):
    """The broadcast of two batch shapes (None stands for no batch); ValueError if they do not broadcast."""
    if dims_1 is None or dims_2 is None:
        return dims_2 if dims_1 is None else dims_1
    n = max(len(dims_1), len(dims_2))
    a, b = (1,) * (n - len(dims_1)) + tuple(dims_1), (1,) * (n - len(dims_2)) + tuple(dims_2)
    if any(p != q and 1 not in (p, q) for p, q in zip(a, b)):
        raise ValueError(f"Incompatible batch dimensions: {dims_1} and {dims_2}.")
    return max_tuple(a, b)


def pyKeOps_Print(message, **kwargs):  # noqa: N802  (pykeops's names)
    """print(message) unless messages are off (`set_verbose(False)`, PYKEOPS_VERBOSE=0)."""
    if config.verbose:
        print(message, **kwargs)


def pyKeOps_Message(message, use_tag=True, **kwargs):  # noqa: N802
    """A message, tagged '[pyKeOps] ', unless messages are off."""
    pyKeOps_Print(("[pyKeOps] " if use_tag else "") + message, **kwargs)


def pyKeOps_Warning(message):  # noqa: N802
    pyKeOps_Print("[pyKeOps] Warning : " + message)
