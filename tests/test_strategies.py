"""A loop-nest strategy registered from outside the package, by this module alone: the plain
SIMD loop with two vectors of j an iteration, selected by name through `schedule=`, against
the dense oracle (the vector part, its tail, block-sparse ranges and a K-min's shared state)."""

import re

import numpy as np
import pytest

from keomlir.backends.llvm.renderer import render
from keomlir.backends.llvm.strategies import Lanes, register
from keomlir.numpy import Genred
from keomlir.schedule import parse_overrides

from conftest import assert_close


@register
class TwoVectors(Lanes):
    """The plain SIMD loop, unrolled twice."""

    name = "test_two_vectors"
    unroll = 2


GAUSS = ("Exp(-SqDist(x,y)) * b", ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"])
MINE = {"strategy": TwoVectors.name}


def _data(rng, m=37, n=301):  # n: whole pairs of vectors, then a tail of fewer than two vectors
    return (rng.normal(size=(m, 3)).astype(np.float32), rng.normal(size=(n, 3)).astype(np.float32),
            rng.normal(size=(n, 2)).astype(np.float32))


def _d2(x, y):
    return ((x.astype(np.float64)[:, None] - y[None]) ** 2).sum(-1)


def test_a_registered_strategy_runs_by_name(rng):
    x, y, b = _data(rng)
    g = Genred(*GAUSS, axis=1, schedule=MINE)
    sched = g.reduction.kernel("float32").schedule
    assert sched.strategy == TwoVectors.name and f"strategy = {TwoVectors.name}" in sched.text()
    assert sched.rows == Genred(*GAUSS, axis=1).reduction.kernel("float32").schedule.rows  # fields: as lanes'
    assert_close(g(x, y, b), np.exp(-_d2(x, y)) @ b.astype(np.float64), "float32")
    # block-sparse: each block of rows over its own j intervals, each with its vector part and tail
    ranges_i = np.array([[0, 20], [20, 37]], np.int64)
    slices_i = np.array([1, 3], np.int64)
    redranges_j = np.array([[3, 250], [0, 70], [100, 301]], np.int64)
    ranges = (ranges_i, slices_i, redranges_j, *(np.zeros((1, 2), np.int64), np.zeros(1, np.int64),
                                                 np.zeros((1, 2), np.int64)))
    got = g(x, y, b, ranges=ranges)
    mask = np.zeros((37, 301), bool)
    mask[:20, 3:250] = True
    mask[20:, 0:70] = mask[20:, 100:301] = True
    assert_close(got, (np.exp(-_d2(x, y)) * mask) @ b.astype(np.float64), "float32")


def test_a_registered_strategy_keeps_a_k_min_in_order(rng):
    x, y, _ = _data(rng)
    got = Genred("SqDist(x,y)", ["x = Vi(3)", "y = Vj(3)"], "ArgKMin", axis=1, opt_arg=4, schedule=MINE)(x, y)
    assert np.array_equal(got, np.argsort(_d2(x, y), axis=1, kind="stable")[:, :4])


def test_the_unrolled_loop_is_what_runs():
    """The SIMD loop steps by two vectors; the default schedule never picks a registered strategy."""
    default = Genred(*GAUSS, axis=1).reduction
    assert default.kernel("float32").schedule.strategy == "lanes"
    mine = Genred(*GAUSS, axis=1, schedule=MINE).reduction
    lanes = default.kernel("float32").schedule.lanes
    text = str(render(mine.program, "float32", schedule=mine.kernel("float32").schedule))
    plain = str(render(default.program, "float32", schedule=default.kernel("float32").schedule))
    step = re.compile(rf'add i64 %"jv(\.\d+)?", {2 * lanes}\n')  # the loop's step: two vectors
    assert step.search(text) and not step.search(plain)


def test_unknown_strategies_name_the_registered_ones():
    with pytest.raises(ValueError, match=f"strategy='nope' is not valid: expected one of .*lanes.*{TwoVectors.name}"):
        parse_overrides({"strategy": "nope"})
    with pytest.raises(ValueError, match="already registered"):
        register(type("Again", (Lanes,), {"name": TwoVectors.name}))
