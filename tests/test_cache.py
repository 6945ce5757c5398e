"""The kernel cache: in memory, on disk, and robust to corrupt or foreign entries."""

import numpy as np
import pytest

from keomlir.backends import cache, cpu
from keomlir.numpy import Genred


@pytest.fixture
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEOMLIR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(cpu, "_kernels", {})
    return tmp_path


def _gauss():
    return Genred("Exp(-SqDist(x,y)*IntCst(3)) * b", ["x = Vi(2)", "y = Vj(2)", "b = Vj(1)"], axis=1)


def _args():
    r = np.random.default_rng(0)
    return r.normal(size=(30, 2)), r.normal(size=(40, 2)), r.normal(size=(40, 1))


def _expected(x, y, b):
    return np.exp(-3 * ((x[:, None] - y[None]) ** 2).sum(-1)) @ b


def test_disk_cache_is_used_after_a_restart(fresh_cache):
    args = _args()
    g = _gauss()
    np.testing.assert_allclose(g(*args), _expected(*args), rtol=1e-12)
    assert g.reduction.kernel("float64").stats["source"] == "compiled"
    assert len(cache.entries()) == 1
    cpu._kernels.clear()  # as in a new process
    g2 = _gauss()
    np.testing.assert_allclose(g2(*args), _expected(*args), rtol=1e-12)
    assert g2.reduction.kernel("float64").stats["source"] == "disk"


def test_memory_cache_shares_kernels_between_genreds(fresh_cache):
    args = _args()
    _gauss()(*args)
    g = _gauss()
    g(*args)
    assert g.reduction.kernel("float64") is _gauss().reduction.kernel("float64")


def test_dtype_is_part_of_the_key(fresh_cache):
    x, y, b = _args()
    g = _gauss()
    g(x, y, b)
    g(*(a.astype(np.float32) for a in (x, y, b)))
    assert len(cache.entries()) == 2


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage", "empty", "wrong key"])
def test_corrupt_or_foreign_entries_are_rebuilt(fresh_cache, damage):
    args = _args()
    _gauss()(*args)
    (path,) = cache.entries()
    data = bytearray(path.read_bytes())
    if damage == "flip":
        data[-100] ^= 0xFF
    elif damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "garbage":
        data = bytearray(b"\x7fELF" + bytes(range(256)) * 4)
    elif damage == "empty":
        data = bytearray()
    elif damage == "wrong key":  # a valid entry of another kernel under this name
        other = cache.MAGIC + data[len(cache.MAGIC):].replace(b"IntCst", b"IntCsT", 1)
        data = bytearray(other)
    path.write_bytes(bytes(data))
    cpu._kernels.clear()
    g = _gauss()
    np.testing.assert_allclose(g(*args), _expected(*args), rtol=1e-12)
    assert g.reduction.kernel("float64").stats["source"] == "compiled"
    assert cache.load(g.reduction.kernel("float64").stats["key"]) is not None


def test_unwritable_cache_directory_only_costs_caching(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    monkeypatch.setenv("KEOMLIR_CACHE_DIR", str(blocker / "sub"))
    monkeypatch.setattr(cpu, "_kernels", {})
    args = _args()
    np.testing.assert_allclose(_gauss()(*args), _expected(*args), rtol=1e-12)


def test_clear(fresh_cache):
    _gauss()(*_args())
    assert cache.clear() == 1
    assert cache.entries() == []
