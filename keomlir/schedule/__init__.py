"""Scheduling: the machines kernels are compiled for (`Target`, targets.py) and how a
program runs on one (`Schedule`, record.py), chosen by one function (`schedule`, choose.py)
among the loop nests registered by name (`strategies.py`)."""

from .targets import NAMED, Target, gpu, host, names, target  # noqa: F401
from .record import FIELDS, Schedule, parse_overrides, with_env  # noqa: F401
from . import strategies  # noqa: F401  (the loop nests by name: Strategy, register, possible)
from .choose import schedule, two_d_chunk, with_sizes  # noqa: F401
from .strategies import Strategy, column_split, wide_contractions  # noqa: F401
