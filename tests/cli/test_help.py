"""`tfllm-X --help` (the installed console script, as users run it) lists the
command's own flags with their meaning."""

import shutil
import subprocess

import pytest

OWN_FLAG = {
    "tfllm-train": "--config",
    "tfllm-evaluate": "--split",
    "tfllm-generate": "--sampler",
    "tfllm-export": "--quantize",
    "tfllm-pipeline": "--profile",
    "tfllm-benchmark": "--peer",
    "tfllm-compress": "--method",
}


@pytest.mark.parametrize("command", sorted(OWN_FLAG))
def test_help_lists_the_commands_flags(command):
    path = shutil.which(command)
    assert path, f"{command} is not installed (pip install -e .)"
    proc = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=120)
    # (absl's --help exits with status 1 after printing; the text is what matters)
    assert f"  {OWN_FLAG[command]}" in proc.stdout, proc.stdout[-2000:]
    if command != "tfllm-benchmark":
        assert "  --workdir" in proc.stdout
