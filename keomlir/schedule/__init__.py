"""Scheduling: the machines kernels are compiled for (`Target`, targets.py) and how a
program runs on one (`Schedule`, record.py), chosen by one function (`schedule`, choose.py)."""

from .targets import NAMED, Target, gpu, host, names, target  # noqa: F401
from .record import FIELDS, Schedule, parse_overrides, with_env  # noqa: F401
from .choose import schedule, strategies, two_d_chunk, wide_contractions, with_sizes  # noqa: F401
