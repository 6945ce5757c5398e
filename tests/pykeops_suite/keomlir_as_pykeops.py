"""pytest plugin (`-p keomlir_as_pykeops`) for run.py: maps the pykeops names to
keomlir before pykeops's test modules are imported (unless KEOMLIR_SUITE_REAL_PYKEOPS
is set, to run the same suite on pykeops itself) and records every test's outcome."""

import json
import os

if not os.environ.get("KEOMLIR_SUITE_REAL_PYKEOPS"):
    import keomlir

    keomlir.install_as_pykeops()

_outcomes = {}


def pytest_collectreport(report):
    # a test module that fails to import counts as one error, named after the module
    if report.failed:
        _outcomes[report.nodeid + "::<import>"] = "error"


def pytest_runtest_logreport(report):
    # a test's outcome is its call phase's, unless its setup or teardown failed or skipped it
    if report.when == "call" or report.outcome != "passed":
        outcome = "error" if report.failed and report.when != "call" else report.outcome
        if _outcomes.get(report.nodeid, "passed") == "passed":
            _outcomes[report.nodeid] = outcome


def pytest_sessionfinish(session):
    path = os.environ.get("KEOMLIR_SUITE_OUTCOMES")
    if path:
        with open(path, "w") as f:
            json.dump(_outcomes, f, indent=1, sort_keys=True)
