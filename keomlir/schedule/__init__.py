"""Scheduling: the machines kernels are compiled for (`Target`, target.py)."""

from .targets import NAMED, Target, gpu, host, names, target  # noqa: F401
