"""What machine a benchmark ran on, for the line every result file starts with."""

from __future__ import annotations

import platform


def cpu_model():
    """The CPU's model name as /proc/cpuinfo gives it (else the platform's word for it)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
