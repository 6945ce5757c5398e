"""Run pykeops 2.3's own test suite against keomlir.

    python tests/pykeops_suite/run.py [-k EXPR] [--real-pykeops] [--save FILE]

Downloads the pykeops 2.3 source distribution once (`pip download`, into
$KEOMLIR_SUITE_CACHE or ~/.cache/keomlir/pykeops-suite), extracts its `pykeops/test/`
and runs it with pytest, keomlir installed under the pykeops names by the plugin
`keomlir_as_pykeops.py`.  Prints one line per test with pykeops's own outcome on this
machine (recorded in `pykeops_results.json`, see README.md here) and the totals.  Exits
non-zero when fewer than MIN_PASSED tests pass or a test that passes on pykeops fails.

`--real-pykeops` runs the same tests on the pykeops importable by this Python (no
mapping) and `--save FILE` writes the outcomes as JSON: how pykeops_results.json is made.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import subprocess
import sys
import tarfile
import tempfile

VERSION = "2.3"
MIN_PASSED = 72
HERE = pathlib.Path(__file__).resolve().parent
RESULTS = HERE / "pykeops_results.json"


def suite_dir(cache: pathlib.Path) -> pathlib.Path:
    """The extracted tests, downloading the sdist on first use."""
    tests = cache / f"pykeops-{VERSION}" / "pykeops" / "test"
    if tests.is_dir():
        return tests
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    f"pykeops=={VERSION}", "-d", str(cache)], check=True)
    sdist = cache / f"pykeops-{VERSION}.tar.gz"
    prefix = f"pykeops-{VERSION}/pykeops/test/"
    with tarfile.open(sdist) as tar:
        # only the tests: the package's own modules must not be importable next to them; no __init__.py,
        # so pytest does not import them as a package named after pykeops
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()
                   and not m.name.endswith("__init__.py")]
        tar.extractall(cache, members=members, filter="data")
    return tests


def run_suite(tests: pathlib.Path, real_pykeops: bool, keyword: str | None) -> dict:
    env = dict(os.environ)
    import keomlir  # the keomlir this runner sees is the one the tests get

    paths = [str(HERE), str(pathlib.Path(keomlir.__file__).resolve().parent.parent)]
    env["PYTHONPATH"] = os.pathsep.join(paths + [p for p in [env.get("PYTHONPATH")] if p])
    if real_pykeops:
        env["KEOMLIR_SUITE_REAL_PYKEOPS"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        outcomes_file = pathlib.Path(tmp) / "outcomes.json"
        env["KEOMLIR_SUITE_OUTCOMES"] = str(outcomes_file)
        command = [sys.executable, "-m", "pytest", "-p", "keomlir_as_pykeops", "-p", "no:cacheprovider",
                   "--import-mode=importlib", "--continue-on-collection-errors", "-q", "-rN", "--tb=line", "--rootdir", str(tests), "-c", os.devnull,
                   str(tests)]
        if keyword:
            command += ["-k", keyword]
        subprocess.run(command, env=env, cwd=tmp)
        return json.loads(outcomes_file.read_text()) if outcomes_file.exists() else {}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="keyword", help="pytest -k expression (a subset of the suite)")
    parser.add_argument("--real-pykeops", action="store_true", help="run on pykeops itself, not keomlir")
    parser.add_argument("--save", type=pathlib.Path, help="write the outcomes to this JSON file")
    parser.add_argument("--cache", type=pathlib.Path,
                        default=pathlib.Path(os.environ.get("KEOMLIR_SUITE_CACHE",
                                                            pathlib.Path.home() / ".cache/keomlir/pykeops-suite")))
    args = parser.parse_args(argv)
    outcomes = run_suite(suite_dir(args.cache), args.real_pykeops, args.keyword)
    if args.save:
        args.save.write_text(json.dumps(outcomes, indent=1, sort_keys=True) + "\n")
    reference = json.loads(RESULTS.read_text()) if RESULTS.exists() and not args.real_pykeops else {}
    regressions = []
    print(f"\n{'test':<92} {'here':<8} pykeops")
    for name, outcome in sorted(outcomes.items()):
        theirs = reference.get(name, "?")
        if outcome in ("failed", "error") and theirs == "passed":
            regressions.append(name)
        print(f"{name:<92} {outcome:<8} {theirs}")
    totals = {k: sum(v == k for v in outcomes.values()) for k in ("passed", "failed", "error", "skipped")}
    print(", ".join(f"{n} {k}" for k, n in totals.items()) + f" (of {len(outcomes)})")
    if regressions:
        print(f"failing here but passing on pykeops {VERSION}: {', '.join(regressions)}")
    if args.keyword or args.real_pykeops:
        return 0
    return 0 if totals["passed"] >= MIN_PASSED and not regressions else 1


if __name__ == "__main__":
    sys.exit(main())
