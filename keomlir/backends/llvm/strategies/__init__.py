"""The CPU's loop-nest strategies, one module each, found by the Schedule's `strategy`
(`loop_nest`); `register` adds one (see `base.py` for the hooks, ARCHITECTURE.md for how)."""

from .base import LOOP_NESTS, LoopNest, loop_nest, register  # noqa: F401
from .lanes import Lanes  # noqa: F401
from .contraction import Contraction  # noqa: F401
from .screened import Screened  # noqa: F401
from .columns import Columns  # noqa: F401
