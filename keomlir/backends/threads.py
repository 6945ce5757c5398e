"""Worker threads of the CPU runtime: thread pools that a forked child makes anew, and
kernel calls cut into chunks so that Ctrl-C stops the work itself.

A call is split into shares (the rows, or the j, one thread reduces); a share runs as
consecutive chunks of about CHUNK_SECONDS, each sized from the speed of the chunk
before it, and checks its call's stop flag between chunks.  The waiting thread sets
the flag when it is interrupted (KeyboardInterrupt, or any exception) and waits for
the shares to stop, since they write into buffers the caller owns, before the
exception goes on: the cores are idle again within a chunk and the kernels stay
usable.  A call of one share runs in the calling thread, where Python handles the
signal between two chunks.
"""

from __future__ import annotations

import concurrent.futures
import math
import os
import threading
import time

import numpy as np

CHUNK_SECONDS = 0.05  # None: each share in one kernel call (the runtime unchunked, for bench/interrupt.py)
FIRST_PAIRS = 1 << 21  # pairs of a share's first chunk, before its speed is known
GROWTH = 8  # a chunk at most this many times the pairs of the one before
WAIT_SECONDS = 0.1  # the waiting thread wakes this often, so that signals reach it on any platform

_pools: dict[int, concurrent.futures.ThreadPoolExecutor] = {}


def pool(n):
    """The executor of n threads, made on first use (threads start on first submit)."""
    found = _pools.get(n)
    if found is None:  # two threads may race here: the loser's executor is dropped before any thread starts
        found = _pools.setdefault(n, concurrent.futures.ThreadPoolExecutor(max_workers=n,
                                                                           thread_name_prefix="keomlir"))
    return found


def _forget_pools():
    """In a forked child: the parent's worker threads do not exist there, and an executor
    that believes it has them would queue work forever; the child starts its own."""
    global _pools
    _pools = {}


os.register_at_fork(after_in_child=_forget_pools)


def run(shares):
    """Run every share (a function of a `threading.Event`, the stop flag) to its end, in
    parallel on pool threads (one share: in this thread); on an exception here, stop them
    and wait until they have stopped before it goes on."""
    stop = threading.Event()
    if len(shares) <= 1:
        for share in shares:
            share(stop)
        return
    executor, futures = pool(len(shares)), []
    try:
        for share in shares:  # (an interrupt between two submits must stop the first)
            futures.append(executor.submit(share, stop))
        while concurrent.futures.wait(futures, timeout=WAIT_SECONDS).not_done:
            pass
    except BaseException:
        stop.set()
        _wait_all(futures)
        raise
    for f in futures:
        f.result()  # a share's own exception


def _wait_all(futures):
    """Wait for stopping shares; a second Ctrl-C meanwhile is the same request."""
    while True:
        try:
            concurrent.futures.wait(futures)
            return
        except KeyboardInterrupt:
            pass


def chunks(call, lo, hi, extent, stop, budget=None):
    """call(a, b) on consecutive ranges [a, b) covering [lo, hi) until `stop` is set;
    extent(a, pairs) -> (b, pairs of [a, b)) ends a chunk that starts at a and should
    be about `pairs` pairs of work, `budget` for the first (default FIRST_PAIRS).
    Returns the budget of a next chunk (to carry on with), or None if stopped."""
    if not CHUNK_SECONDS:
        budget = math.inf
    elif budget is None:
        budget = FIRST_PAIRS
    while lo < hi:
        if stop.is_set():
            return None
        end, pairs = extent(lo, budget)
        t0 = time.perf_counter()
        call(lo, end)
        if CHUNK_SECONDS:
            spent = time.perf_counter() - t0
            budget = min(budget * GROWTH, pairs * CHUNK_SECONDS / max(spent, 1e-6))
        lo = end
    return budget


def uniform(hi, unit_pairs, align):
    """extent for units of `unit_pairs` pairs each (rows of n_j, or j of n rows), chunks
    a multiple of `align` units, the last one excepted (it takes a shorter rest along)."""
    unit_pairs = max(unit_pairs, 1)

    def extent(a, pairs):
        n = hi - a if pairs == math.inf else max(align, int(pairs // unit_pairs) // align * align)
        b = hi if hi - (a + n) < align else a + n
        return b, (b - a) * unit_pairs

    return extent


def weighted(cumulative):
    """extent for units of different work: cumulative[k] is the pairs of units before k."""

    def extent(a, pairs):
        if pairs == math.inf:
            b = len(cumulative) - 1
        else:
            b = int(np.searchsorted(cumulative, cumulative[a] + pairs, side="right")) - 1
            b = min(max(b, a + 1), len(cumulative) - 1)
        return b, int(cumulative[b] - cumulative[a])

    return extent


def bounds(n, parts, align=1, fallback=1):
    """[0, n) split into up to `parts` non-empty consecutive ranges of about equal size,
    the inner bounds multiples of `align` (of `fallback` when n is under four aligns a
    part: an align rounds the sizes too coarsely then)."""
    if n < 4 * parts * align:
        align = fallback
    cuts = [min(n, round(n * t / parts / align) * align) for t in range(parts)] + [n]
    return [(lo, hi) for lo, hi in zip(cuts[:-1], cuts[1:]) if hi > lo]
