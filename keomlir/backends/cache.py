"""On-disk cache of compiled kernels (object code or PTX), keyed by everything
that determines the machine code (`kernel_key`, the one key every backend uses).

An entry is `MAGIC | len(key) | key | sha256(payload) | payload`, written to a
temporary file and renamed into place (atomic on POSIX).  An entry whose magic,
key or checksum does not match is ignored and rebuilt: never trusted, never a
crash.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pathlib
import struct
import tempfile

import llvmlite

from .._version import __version__

MAGIC = b"KEOMLIR-OBJ-1\n"


@functools.lru_cache(maxsize=None)
def compiler_digest():
    """A hash of the compiler's own source: a changed compiler never reuses old kernels."""
    root = pathlib.Path(__file__).resolve().parent.parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")) + sorted(root.rglob("*.lark")):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def kernel_key(program, target, **options):
    """The cache key of `program` compiled for `target` (a string naming the machine)
    with `options` (dtype, accumulator, sum scheme, variant, GPU configuration...):
    the versions, a hash of the compiler, the options and the program's IR text."""
    settings = " ".join(f"{k}={options[k]}" for k in sorted(options))
    return "\n".join([f"keomlir {__version__} ({compiler_digest()}) llvmlite {llvmlite.__version__}",
                      f"target {target}", settings, program.text()])


def cache_dir():
    root = os.environ.get("KEOMLIR_CACHE_DIR")
    if root:
        return pathlib.Path(root)
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return pathlib.Path(base) / "keomlir"


def _path(key: str):
    return cache_dir() / (hashlib.sha256(key.encode()).hexdigest()[:40] + ".kobj")


def load(key: str):
    """The payload stored under `key`, or None if absent, foreign or corrupt."""
    try:
        data = _path(key).read_bytes()
    except OSError:
        return None
    kb = key.encode()
    head = len(MAGIC)
    if data[:head] != MAGIC or len(data) < head + 4:
        return None
    (klen,) = struct.unpack_from("<I", data, head)
    pos = head + 4
    if data[pos:pos + klen] != kb or klen != len(kb):
        return None
    pos += klen
    digest, payload = data[pos:pos + 32], data[pos + 32:]
    if len(digest) != 32 or hashlib.sha256(payload).digest() != digest:
        return None
    return payload


def store(key: str, payload: bytes):
    """Write atomically; a read-only or full disk only costs the caching."""
    kb = key.encode()
    return write_atomic(_path(key), MAGIC + struct.pack("<I", len(kb)) + kb + hashlib.sha256(payload).digest()
                        + payload)


def write_atomic(path, data: bytes):
    """`data` written to a temporary file renamed to `path` (readers see all of it or none);
    False where the disk refuses."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            os.replace(tmp, path)
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return False
    return True


def entries():
    d = cache_dir()
    return sorted(d.glob("*.kobj")) if d.is_dir() else []


def clear():
    n = 0
    for p in entries():
        try:
            p.unlink()
            n += 1
        except OSError:
            pass
    return n
