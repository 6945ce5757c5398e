"""The tuning database: the schedule `keomlir tune` (keomlir/tune.py) found best for a
program on the host, by size class, which later calls of that program run with.

An entry is one JSON file in `tuning/` beside the kernel cache (`cache.cache_dir()`),
named by a hash of its key: the optimized program's text (alias names left out), the
target's key, the data and accumulator types and summation, and the size class, log2
buckets of the rows i and j (M in [2^(a-1), 2^a): `a` = M.bit_length()).  It holds the
overrides (text, as `--schedule` reads them; '' when the default won) and how they were
measured.  An entry that does not parse, or whose overrides the program no longer
allows (a changed compiler), is ignored: never trusted, never a crash.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

from .._version import __version__
from ..schedule import host, parse_overrides, schedule
from ..schedule.targets import ENV as TARGET_ENV
from . import cache

FOLDER = "tuning"
CACHE_ENV = "KEOMLIR_CACHE_DIR"
_found = {}  # lookup memo: (program, types, size class, target and cache folders) -> overrides
version = 0  # counts the entries stored by this process (memos of what they change key on it)


def size_class(n_i, n_j):
    return n_i.bit_length(), n_j.bit_length()


def class_text(n_i, n_j):
    """The size class of (n_i, n_j) in words: 'M in [16384, 32768), N in [16384, 32768)'."""
    def bucket(n):
        a = n.bit_length()
        return "0" if a == 0 else f"[{1 << (a - 1)}, {1 << a})"

    return f"M in {bucket(n_i)}, N in {bucket(n_j)}"


def key(program, dtype, acc_dtype, sum_scheme, n_i, n_j):
    a, b = size_class(n_i, n_j)
    return "\n".join([f"keomlir {__version__} tuning", f"target {host().key}",
                      f"dtype={dtype} acc={acc_dtype} scheme={sum_scheme} size_class={a},{b}",
                      dataclasses.replace(program, names=()).text()])


def path(entry_key):
    return cache.cache_dir() / FOLDER / (hashlib.sha256(entry_key.encode()).hexdigest()[:40] + ".json")


def entry(program, dtype, acc_dtype, sum_scheme, n_i, n_j):
    """The stored entry (a dict) of a program at the class of (n_i, n_j), or None."""
    k = key(program, dtype, acc_dtype, sum_scheme, n_i, n_j)
    try:
        found = json.loads(path(k).read_text())
    except (OSError, ValueError):
        return None
    return found if isinstance(found, dict) and found.get("key") == k else None


def lookup(program, dtype, acc_dtype, sum_scheme, n_i, n_j):
    """The tuned overrides of a call (() where the default won), or None where none is stored
    (or what is stored is no longer valid); read once per process and size class."""
    memo = (program, dtype, acc_dtype, sum_scheme, n_i.bit_length(), n_j.bit_length(), os.environ.get(TARGET_ENV),
            os.environ.get(CACHE_ENV), os.environ.get("XDG_CACHE_HOME"))
    found = _found.get(memo, _found)
    if found is _found:
        stored = entry(program, dtype, acc_dtype, sum_scheme, n_i, n_j)
        try:
            found = parse_overrides(stored["overrides"])
            schedule(program, host(), dtype=dtype, overrides=found)
        except (ValueError, TypeError, KeyError):  # (None: nothing stored)
            found = None
        _found[memo] = found
    return found


def store(program, dtype, acc_dtype, sum_scheme, n_i, n_j, overrides_text, measured):
    """Keep `overrides_text` ('' for the default) as the program's schedule at the class of
    (n_i, n_j), with `measured` (a dict: times, sizes, budget...); returns the file's path."""
    global version
    k = key(program, dtype, acc_dtype, sum_scheme, n_i, n_j)
    where = path(k)
    cache.write_atomic(where, json.dumps({"key": k, "overrides": overrides_text, **measured}, indent=1).encode())
    version += 1
    _found.clear()  # (entries memoized under other environments may name this file too)
    return where


def entries():
    folder = cache.cache_dir() / FOLDER
    return sorted(folder.glob("*.json")) if folder.is_dir() else []
