#!/usr/bin/env bash
# keomlir on 64-bit ARM, from an x86-64 Linux machine with root: an arm64 Debian root made with Debian's
# own tools (debootstrap, qemu-user-static and its binfmt registration), aarch64 wheels of keomlir's
# dependencies downloaded here for the root's Python (the root has no certificates of its own, so it
# never downloads), keomlir installed from this checkout, then the NumPy-level tests of every reduction
# on both axes and dtypes, gradients, LazyTensor, KernelSolve, ranges, the math library's ulp bounds,
# the kernel cache and the AArch64 host detection run under emulation against the float64 oracle, then
# the reductions again as NEON-only code.  torch is left out (its aarch64 wheel is large and slow to
# import emulated): the torch tests skip.
#
#   tests/platforms/aarch64.sh [PYTEST ARGS...]   (default: the subset below, on every core)
#
# The root, the wheels and the installed dependencies are kept in $KEOMLIR_AARCH64_CACHE (default
# /var/cache/keomlir-aarch64), so a second run only reinstalls keomlir and runs the tests.  The host keeps
# Debian's qemu-user-static and its binfmt registrations, as installing that package leaves them.  Exit status:
# pytest's, or 77 when this machine cannot run it (not x86-64 Linux, not root, no network for a first
# run), with the reason on stderr.
set -euo pipefail
checkout=$(cd "$(dirname "$0")/../.." && pwd)
cache=${KEOMLIR_AARCH64_CACHE:-/var/cache/keomlir-aarch64}
suite=bookworm  # Debian 12: Python 3.11, for which every dependency has aarch64 wheels
mirror=${KEOMLIR_DEBIAN_MIRROR:-http://deb.debian.org/debian}
root=$cache/root-$suite
tests=(tests/test_reductions.py tests/test_autodiff.py tests/test_lazytensor.py tests/test_kernelsolve.py
       tests/test_ranges.py tests/test_mathlib.py tests/test_cache.py tests/test_aarch64.py)
python=${PYTHON:-python3}
start=$SECONDS

say() { echo "aarch64: $*" >&2; }
skip() { say "skipped: $*"; exit 77; }

[[ $(uname -s) == Linux && $(uname -m) == x86_64 ]] || skip "needs an x86-64 Linux machine (this is $(uname -sm))"
[[ $(id -u) == 0 ]] || skip "needs root (debootstrap, chroot, binfmt registration)"

# ---- the host's tools: Debian's packages --------------------------------------------------------------
if ! command -v debootstrap >/dev/null || ! command -v qemu-aarch64-static >/dev/null \
        || ! command -v update-binfmts >/dev/null; then
    command -v apt-get >/dev/null || skip "needs debootstrap, qemu-user-static and binfmt-support (no apt-get here)"
    say "installing debootstrap, qemu-user-static, binfmt-support"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap qemu-user-static \
        binfmt-support >/dev/null; } || skip "could not install debootstrap, qemu-user-static, binfmt-support"
fi
# aarch64 executables run through qemu: the kernel's binfmt_misc table (F: the interpreter is opened
# now, so it works inside the chroot, which has no qemu of its own)
if [[ ! -e /proc/sys/fs/binfmt_misc/register ]]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || skip "cannot mount binfmt_misc"
fi
if ! grep -qs '^enabled' /proc/sys/fs/binfmt_misc/qemu-aarch64; then
    update-binfmts --enable qemu-aarch64 || skip "cannot register qemu-aarch64 with binfmt_misc"
fi
grep -qs '^flags: .*F' /proc/sys/fs/binfmt_misc/qemu-aarch64 \
    || skip "qemu-aarch64 is registered without the F flag: it would not run inside the chroot"

# ---- the arm64 root ------------------------------------------------------------------------------------
mkdir -p "$cache"
if [[ ! -e $root/.keomlir-complete ]]; then
    say "debootstrap: arm64 Debian $suite into $root"
    rm -rf "$root.part"
    debootstrap --arch=arm64 --variant=minbase --include=python3 "$suite" "$root.part" "$mirror" \
        > "$cache/debootstrap.log" 2>&1 || { tail -20 "$cache/debootstrap.log" >&2; skip "debootstrap failed"; }
    rm -rf "$root" && mv "$root.part" "$root" && touch "$root/.keomlir-complete"
fi
in_root() {  # run a command in the root: /proc, /sys and /dev mounted in a mount namespace of its own
    unshare --mount --propagation private /bin/sh -c '
        root=$1; shift
        mount -t proc proc "$root/proc" && mount -t sysfs sys "$root/sys" && mount --rbind /dev "$root/dev" &&
        exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb chroot "$root" "$@"' \
        sh "$root" "$@"
}
machine=$(in_root uname -m)
[[ $machine == aarch64 ]] || { say "the root runs as $machine, not aarch64"; exit 1; }
pyver=$(in_root python3 -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')

# ---- aarch64 wheels, downloaded here for the root's Python -------------------------------------------
# the host's versions of what it has installed (the same numbers as the rest of the tests), else the newest
pins=()
for dist in numpy llvmlite lark pytest pytest-xdist hypothesis; do
    version=$("$python" -c "import importlib.metadata as m; print(m.version('$dist'))" 2>/dev/null || true)
    pins+=("$dist${version:+==$version}")
done
wheels=$cache/wheels-py$pyver
stamp=$(printf '%s\n' "${pins[@]}" | sha256sum | cut -c1-16)
platforms=(--only-binary=:all: --implementation cp --python-version "$pyver" --platform manylinux2014_aarch64)
for minor in $(seq 17 36); do platforms+=(--platform "manylinux_2_${minor}_aarch64"); done  # glibc 2.17 to 2.36
if [[ ! -e $wheels/.keomlir-$stamp ]]; then
    say "downloading aarch64 wheels for Python $pyver: ${pins[*]}"
    rm -rf "$wheels" "$wheels.part"
    "$python" -m pip download -q --no-cache-dir -d "$wheels.part" "${platforms[@]}" "${pins[@]}" \
        || skip "could not download the aarch64 wheels"
    mv "$wheels.part" "$wheels" && touch "$wheels/.keomlir-$stamp"
fi
# installed by the host's pip for the root's platform (no pip, venv or certificates in the root), on the
# PYTHONPATH of its Debian Python
site=/opt/keomlir-site
if [[ ! -e $root$site/.keomlir-$stamp ]]; then
    say "installing the wheels in the root's $site"
    rm -rf "$root$site"
    "$python" -m pip install -q --no-index --find-links "$wheels" --target "$root$site" "${platforms[@]}" "${pins[@]}"
    touch "$root$site/.keomlir-$stamp"
fi

# ---- keomlir from this checkout, and its tests -----------------------------------------------------------
rm -rf "$root/keomlir" && mkdir -p "$root/keomlir/dist"
build=$(mktemp -d)  # a copy to build in: setuptools leaves build/ and egg-info beside the sources
trap 'rm -rf "$build"' EXIT
tar -C "$checkout" --exclude=__pycache__ -cf - keomlir tests pyproject.toml README.md | tar -C "$build" -xf -
"$python" -m pip wheel -q --no-deps --no-build-isolation -w "$root/keomlir/dist" "$build" >/dev/null
cp -r "$build/tests" "$build/pyproject.toml" "$root/keomlir/"
"$python" -m pip install -q --no-index --no-deps --target "$root/keomlir/site" "$root"/keomlir/dist/keomlir-*.whl
say "ready after $((SECONDS - start)) s; the tests, emulated:"
in_root env PYTHONPATH=/keomlir/site:$site python3 -c 'import keomlir.schedule as s; print(s.target("host").text())'
run_tests() {  # run_tests [NAME=VALUE...] -- ARGS: from /keomlir, whose tests import the installed keomlir
    local env=(PYTHONPATH=/keomlir/site:$site)
    while [[ $1 != -- ]]; do env+=("$1"); shift; done
    shift
    in_root /bin/sh -c 'cd /keomlir && exec "$@"' sh env "${env[@]}" python3 -m pytest -p no:cacheprovider -q \
        -n auto --dist worksteal "$@"
}
if (($#)); then
    run_tests -- "$@"
    exit
fi
status=0
run_tests -- "${tests[@]}" --durations=10 || status=$?
# the emulated CPU has SVE and SVE2, which LLVM may use for single 128-bit operations: the reductions again
# as NEON-only code (KEOMLIR_TARGET=neoverse-n1), as on Graviton 2 or Ampere Altra
if ((status == 0)); then
    say "the reductions again, compiled for neoverse-n1 (NEON only):"
    run_tests KEOMLIR_TARGET=neoverse-n1 -- tests/test_reductions.py || status=$?
fi
say "finished in $((SECONDS - start)) s (status $status)"
exit $status
