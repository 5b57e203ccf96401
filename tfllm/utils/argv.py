"""This process's name as the user typed it, for messages, reports and locks."""

from __future__ import annotations

import os
import sys


def command_name() -> str:
    """`tfllm-train` whether run as the console script or `python -m tfllm.cli.train`."""
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "tfllm"
    if name.endswith(".py"):
        name = "tfllm-" + name.removesuffix(".py")
    return name
