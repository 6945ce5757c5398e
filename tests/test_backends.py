"""The backend registry: every registered backend runs a launch through the one interface
(against the dense oracle), backend= names them, explain and keomlir.dask reach theirs through it."""

import numpy as np
import pytest

from keomlir import explain
from keomlir.backends import registry
from keomlir.numpy import Genred

from conftest import assert_close

ALIASES = ["x = Vi(3)", "y = Vj(3)", "b = Vj(2)"]


def test_the_built_in_backends_are_registered():
    assert {"CPU", "GPU", "reference", "host-sim"} <= set(registry.names())
    assert registry.get("GPU_2D_host") is registry.get("GPU")  # pykeops's names
    assert registry.for_target(registry.get("CPU").target()).name == "CPU"
    with pytest.raises(ValueError, match="backend must be 'auto', 'CPU', .*'host-sim'.*got 'TPU'"):
        Genred("SqDist(x,y)", ALIASES[:2], axis=1)(np.zeros((2, 3)), np.zeros((2, 3)), backend="TPU")


@pytest.mark.parametrize("name", [n for n in registry.names() if registry.get(n).available()])
def test_every_available_backend_runs_a_launch(name, rng):
    x, y, b = rng.normal(size=(9, 3)), rng.normal(size=(14, 3)), rng.normal(size=(14, 2))
    want = np.exp(-((x[:, None] - y[None]) ** 2).sum(-1)) @ b
    g = Genred("Exp(-SqDist(x,y)) * b", ALIASES, axis=1)
    assert_close(g(x, y, b, backend=name), want, "float64")
    launch = g.reduction.launch([x, y, b])
    assert_close(registry.get(name).run(launch, [x, y, b])[0], want, "float64")


def test_explain_schedules_and_compiles_through_the_targets_backend():
    cpu = explain("Exp(-SqDist(x,y)) * b", ALIASES, emit="llvm")
    assert cpu.schedule == registry.get("CPU").schedule(cpu.program)
    gpu = explain("Exp(-SqDist(x,y)) * b", ALIASES, emit="ptx", target="sm_90")
    sched = registry.get("GPU").schedule(gpu.program, target=gpu.schedule.target)
    assert gpu.schedule == sched and gpu.outputs["ptx"] == registry.get("GPU").compile(
        gpu.program, "float32", target=sched.target)[1]
