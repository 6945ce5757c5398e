"""Every command of the README's research walk-through ("Your own experiments"), run in order in a
scratch directory as a reader would run it: each must succeed and print what the README shows, and
each Python block must run (its asserts compare with NumPy)."""

import os
import pathlib
import re
import stat
import subprocess
import sys

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
SECTION = "### Your own experiments"


def blocks():
    """[(language, text)] of the code blocks of the section."""
    readme = (ROOT / "README.md").read_text()
    start = readme.index(SECTION)
    end = re.compile(r"^#{1,3} ", re.M).search(readme, start + len(SECTION))
    section = readme[start:end.start() if end else len(readme)]
    return re.findall(r"^```(\w*)\n(.*?)^```$", section, re.M | re.S)


def commands(text):
    """[(command, expected output lines)] of a shell block: `$ ` lines and what follows each."""
    found = []
    for line in text.splitlines():
        if line.startswith("$ "):
            found.append((line[2:], []))
        else:
            found[-1][1].append(line)
    return found


@pytest.fixture(scope="module")
def scratch(tmp_path_factory):
    """A directory with `examples/` and a `keomlir` command running this checkout."""
    d = tmp_path_factory.mktemp("research")
    (d / "examples").symlink_to(ROOT / "examples")
    bin_dir = d / "bin"
    bin_dir.mkdir()
    shim = bin_dir / "keomlir"
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m keomlir "$@"\n')
    shim.chmod(shim.stat().st_mode | stat.S_IXUSR)
    env = dict(os.environ, PYTHONPATH=str(ROOT), PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return d, env


def test_the_section_has_commands_and_python():
    kinds = [lang for lang, _ in blocks()]
    assert kinds.count("") >= 4 and kinds.count("python") == 2
    assert sum(len(commands(text)) for lang, text in blocks() if lang == "") >= 10


def test_the_example_pass_shown_is_the_file():
    shown = [text for lang, text in blocks() if lang == "python"][0]
    assert shown in (ROOT / "examples" / "passes" / "reciprocal.py").read_text()


def test_every_command_runs_and_prints_what_the_readme_shows(scratch):
    d, env = scratch
    for lang, text in blocks():
        if lang == "python" and "register_pass\nclass" in text:
            continue  # the excerpt of the example pass (checked above)
        if lang == "python":
            r = subprocess.run([sys.executable, "-c", text], cwd=d, env=env, capture_output=True, text=True,
                               timeout=300)
            assert r.returncode == 0, r.stderr
            continue
        for command, expected in commands(text):
            r = subprocess.run(["bash", "-o", "pipefail", "-c", command], cwd=d, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True, timeout=120)
            assert r.returncode == 0 and "Traceback" not in r.stdout, (command, r.stdout)
            printed = r.stdout.rstrip("\n").splitlines()
            assert [ln.rstrip() for ln in printed] == [ln.rstrip() for ln in expected], command
