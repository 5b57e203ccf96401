"""What machine a measurement ran on (no TensorFlow: scripts that only run commands use it)."""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
    """The CPU's marketing name, for telling result files of different machines apart."""
    if os.path.isfile("/proc/cpuinfo"):  # Linux; elsewhere fall back to platform
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()
