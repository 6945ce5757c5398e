"""pykeops's top-level helpers: keomlir.test_numpy_bindings(), test_torch_bindings(), clean_pykeops()."""

import keomlir


def test_bindings_checks_run_and_report(capsys):
    keomlir.test_numpy_bindings()
    keomlir.test_torch_bindings()
    out = capsys.readouterr().out
    assert "keomlir is working with NumPy" in out and "keomlir is working with torch" in out


def test_clean_pykeops_empties_the_disk_cache(tmp_path, monkeypatch):
    from keomlir.backends import cache

    monkeypatch.setenv("KEOMLIR_CACHE_DIR", str(tmp_path))
    cache.store("some kernel", b"object code")
    assert len(cache.entries()) == 1
    assert keomlir.clean_pykeops() == 1 and cache.entries() == []
