"""bench/roofline.py runs end to end (a slow test: CI's thorough run), so that a script only
run by hand cannot break unnoticed; its numbers are checked for sense, not speed."""

import os
import re
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_roofline_script_writes_every_row(tmp_path):
    out = tmp_path / "roofline.md"
    env = dict(os.environ, PYTHONPATH=ROOT)
    subprocess.run([sys.executable, os.path.join(ROOT, "bench", "roofline.py"), "--quick", "--out", str(out)],
                   check=True, env=env, capture_output=True, timeout=600)
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| Gaussian sum, D = 3 |")]
    assert len(rows) == 3  # the CPU table's, then the NVPTX table's without and with fast math
    fraction = int(re.search(r"\| (\d+)% \|$", rows[0]).group(1))
    assert 5 <= fraction <= 150  # a measured rate against its bound: some sense, not a speed test
    for label in ("its gradient in x", "LogSumExp of -SqDist", "ArgKMin K = 10", "Gaussian sum, D = 128"):
        assert f"| {label}" in text
