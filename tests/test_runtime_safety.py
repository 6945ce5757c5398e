"""The CPU runtime under real use: calls cut into chunks give the dense float64 oracle's
values in every way of splitting the work; a forked child (os.fork, and multiprocessing's
fork workers as torch's DataLoader uses them) computes old and new formulas; Ctrl-C stops
a long reduction's work.

Forks and signals run in a subprocess with a timeout, so a hang fails the test."""

import json
import os
import pathlib
import queue
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from test_ranges import CASES, _dense_formula, _dense_oracle, mask_of, random_ranges

from keomlir.backends import cpu, threads
from keomlir.numpy import Genred

ROOT = str(pathlib.Path(__file__).resolve().parent.parent)

# ---- chunks: every split of the work against the dense oracle ----------------------------------
MODES = {  # mode: (rows, columns, threads, MAX_CHUNK_PAIRS or None, block-sparse)
    "rows over threads": (700, 900, 2, None, False),
    "j over threads": (5, 40000, 2, None, False),
    "long rows, j in chunks": (300, 2000, 2, 1000, False),
    "one thread, long rows": (3, 20000, 1, 1000, False),
    "block-sparse, blocks cut": (600, 800, 2, 5000, True),
}


@pytest.fixture
def tiny_chunks(monkeypatch):
    """Chunks as small as the kernels allow; returns the list of chunks run."""
    ran = []
    chunks = threads.chunks

    def counted(call, *rest):
        return chunks(lambda a, b: ran.append((a, b)) or call(a, b), *rest)

    monkeypatch.setattr(threads, "FIRST_PAIRS", 1)
    monkeypatch.setattr(threads, "CHUNK_SECONDS", 1e-12)
    monkeypatch.setattr(threads, "chunks", counted)
    yield ran
    cpu.set_num_threads(None)


@pytest.mark.parametrize("name", ["Sum", "KMin_ArgKMin"])
@pytest.mark.parametrize("mode", list(MODES))
def test_chunked_calls_match_dense_oracle(mode, name, tiny_chunks, monkeypatch):
    m, n, n_threads, max_pairs, sparse = MODES[mode]
    if max_pairs is not None:
        monkeypatch.setattr(cpu, "MAX_CHUNK_PAIRS", max_pairs)
    cpu.set_num_threads(n_threads)
    rng = np.random.default_rng(5)
    x, b = rng.standard_normal((m, 3)), rng.standard_normal((n, 2))
    y = np.round(rng.standard_normal((n, 3)), 1)  # repeated points: ties, the lower j first, across chunks
    formula, _, k = CASES[name]
    g = Genred(formula, ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"], reduction_op=name, axis=1, opt_arg=k)
    ranges = random_ranges(rng, m, n, density=0.6) if sparse else None
    out = g(x, y, b, ranges=ranges)
    assert len(tiny_chunks) > 20  # the work did run in many chunks
    F, _ = _dense_formula(name, x, y, b)
    mask = mask_of(ranges, m, n) if sparse else np.ones((m, n), bool)
    for o, r in zip(out if isinstance(out, tuple) else (out,), _dense_oracle(name, F, None, mask, k)):
        if o.dtype == np.int64:
            np.testing.assert_array_equal(o, r)
        else:
            finite = np.isfinite(r)
            np.testing.assert_array_equal(np.isfinite(o), finite)
            np.testing.assert_allclose(o[finite], r[finite], rtol=1e-12, atol=1e-12)


def test_chunk_bounds_cover_the_range():
    stop = threading.Event()
    seen = []
    assert threads.chunks(lambda a, b: seen.append((a, b)), 3, 1000, threads.uniform(1000, 7, 16), stop,
                          budget=300) is not None
    assert seen[0] == (3, 3 + 32)  # 300 pairs: 42 units, made a multiple of 16
    assert seen[-1][1] == 1000
    assert all(b0 == a1 for (_, b0), (a1, _) in zip(seen[:-1], seen[1:]))
    assert all((b - a) % 16 == 0 for a, b in seen[:-1])
    stop.set()
    assert threads.chunks(lambda a, b: seen.append((a, b)), 0, 10, threads.uniform(10, 1, 1), stop) is None
    assert threads.bounds(100, 3, 8) == [(0, 32), (32, 64), (64, 100)]
    assert threads.bounds(100, 3, 16) == [(0, 33), (33, 67), (67, 100)]  # too coarse: unaligned
    assert threads.bounds(3, 4) == [(0, 1), (1, 2), (2, 3)]


# ---- subprocesses: fork, Ctrl-C ---------------------------------------------------------------
def _spawn(script):
    env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in proc.stdout], daemon=True).start()
    return proc, lines


def _next_line(proc, lines, timeout):
    try:
        return lines.get(timeout=timeout).strip()
    except queue.Empty:
        proc.kill()
        pytest.fail(f"no output in {timeout} s: {proc.stderr.read()[-2000:]}")


COMMON = """
import json, os, signal, sys, time
signal.alarm(150)  # never outlive the test, hung or not (a forked child inherits no alarm: it sets its own)
# Ctrl-C raises KeyboardInterrupt here whatever this process inherited: started from a background job
# of a non-interactive shell, SIGINT arrives ignored, and Python then installs no handler of its own
signal.signal(signal.SIGINT, signal.default_int_handler)
import numpy as np
from keomlir.backends import cpu
from keomlir.numpy import Genred

def gaussian(x, y, b):  # the dense float64 oracle
    x, y, b = (np.asarray(a, np.float64) for a in (x, y, b))
    return np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b

def correct(g, x, y, b, rtol=1e-9, scale=1.0):  # g: a Gaussian of exp(-scale |x - y|^2)
    return bool(np.allclose(g(x, y, b), gaussian(x * scale ** .5, y * scale ** .5, b), rtol=rtol, atol=rtol))
"""

FORK = COMMON + """
import multiprocessing, threading
cpu.set_num_threads(2)
rng = np.random.default_rng(0)
x, y, b = rng.standard_normal((600, 3)), rng.standard_normal((1000, 3)), rng.standard_normal((1000, 1))
old = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", axis=1)
assert correct(old, x, y, b)  # compiled, and run on both threads

def child_work(_=None):
    signal.alarm(100)
    new = Genred("Exp(-SqDist(x,y) * 2) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", axis=1)
    return correct(old, x, y, b) and correct(new, x, y, b, scale=2)

# forked while another thread compiles: the child must inherit neither the lock held nor LLVM mid-way
other = Genred("Exp(-SqDist(x,y) * 3) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", axis=1)
compiling = threading.Thread(target=lambda: other(x, y, b))
compiling.start()
time.sleep(0.05)
pid = os.fork()
if pid == 0:
    os._exit(0 if child_work() else 3)
_, status = os.waitpid(pid, 0)
print("fork", os.waitstatus_to_exitcode(status), flush=True)
compiling.join()
assert correct(other, x, y, b, scale=3)
with multiprocessing.get_context("fork").Pool(2) as workers:
    print("pool", 0 if all(workers.map_async(child_work, range(2)).get(timeout=100)) else 3, flush=True)
"""


def test_forked_children_compute_old_and_new_formulas():
    proc, lines = _spawn(FORK)
    try:
        for label in ("fork", "pool"):
            assert _next_line(proc, lines, 60) == f"{label} 0"
        assert proc.wait(timeout=30) == 0, proc.stderr.read()[-2000:]
    finally:
        proc.kill()


INTERRUPT = COMMON + """
n = 250000  # about a minute's work on 2 threads of a Zen 4 core pair
rng = np.random.default_rng(0)
x, y, b = (rng.standard_normal((n, d)).astype(np.float32) for d in (3, 3, 1))
g = Genred("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(1)"], "Sum", axis=1)
assert correct(g, x[:300], y[:400], b[:400], 1e-5)
for n_threads in (2, 1):
    cpu.set_num_threads(n_threads)
    print("ready", flush=True)
    try:
        g(x, y, b)
        print("finished", flush=True)
        sys.exit(1)
    except KeyboardInterrupt:
        stopped = time.monotonic()
    cpu_time = time.process_time()
    time.sleep(0.5)
    busy = time.process_time() - cpu_time  # every thread's CPU time: none if the kernel stopped
    print(json.dumps({"stopped": stopped, "busy": busy, "correct": correct(g, x[:300], y[:400], b[:400], 1e-5)}),
          flush=True)
"""


def test_ctrl_c_stops_the_work_of_a_long_reduction():
    proc, lines = _spawn(INTERRUPT)
    try:
        for n_threads in (2, 1):
            assert _next_line(proc, lines, 120) == "ready"
            time.sleep(1.0)  # in the middle of the reduction
            sent = time.monotonic()
            proc.send_signal(signal.SIGINT)
            report = json.loads(_next_line(proc, lines, 20))
            assert report["stopped"] - sent < 2.0, (n_threads, report)
            assert report["busy"] < 0.05, (n_threads, report)  # running on, even 1/4 of 2 cores is 0.25 s
            assert report["correct"]
        assert proc.wait(timeout=20) == 0, proc.stderr.read()[-2000:]
    finally:
        proc.kill()
