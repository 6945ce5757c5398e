"""tests/pykeops_suite/run.py (the runner of pykeops's own test suite against keomlir) on a
tiny stand-in suite in its cache, so no download: the mapping is installed before the
tests are imported, outcomes are compared with pykeops's, and the exit status says so."""

import importlib.util
import pathlib
import sys

RUNNER = pathlib.Path(__file__).resolve().parent / "pykeops_suite" / "run.py"

SUITE = '''
import pytest
from pykeops.numpy.utils import squared_distances
from pykeops.numpy import LazyTensor
import numpy as np

def test_passes():
    x = np.arange(6.0).reshape(3, 1, 2)
    assert np.allclose(LazyTensor(x).sqdist(LazyTensor(x.reshape(1, 3, 2))).sum(1)[:, 0],
                       squared_distances(x[:, 0], x[:, 0]).sum(1))

def test_fails():
    assert LazyTensor(np.ones((2, 1, 1))).sum(1).shape == (3, 1)

@pytest.mark.skip(reason="needs a GPU")
def test_skipped():
    pass
'''


def test_runner_on_a_stand_in_suite(tmp_path, capsys, monkeypatch):
    tests = tmp_path / "pykeops-2.3" / "pykeops" / "test"
    tests.mkdir(parents=True)
    (tests / "test_standin.py").write_text(SUITE)
    spec = importlib.util.spec_from_file_location("pykeops_suite_run", RUNNER)
    run = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(run)
    monkeypatch.setattr(run, "RESULTS", tmp_path / "results.json")
    (tmp_path / "results.json").write_text('{"test_standin.py::test_fails": "passed"}')
    status = run.main(["--cache", str(tmp_path)])
    out = capsys.readouterr().out
    assert "test_standin.py::test_passes" in out and "1 passed, 1 failed, 0 error, 1 skipped (of 3)" in out
    assert "failing here but passing on pykeops 2.3: test_standin.py::test_fails" in out
    assert status == 1 and sys.modules.get("pykeops") is None  # the mapping stayed in the subprocess
