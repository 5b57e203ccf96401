"""Where the pretrained journey's parts live, and the files it reads: shared by the
journey (tfllm.pipeline.pretrained_journey) and its report."""

from __future__ import annotations

import os

import ml_collections

from tfllm.pipeline.pretrained_config import default_pretrained_dir
from tfllm.utils.io import read_json

BASELINE_FILE = "base_perplexity.json"  # the imported SmolLM2's perplexity, in its LoRA part


def layout(workdir: str) -> dict[str, str]:
    """Each part's workdir inside the journey's."""
    return {
        "minilm_import": os.path.join(workdir, "imported", "minilm"),
        "smollm2_import": os.path.join(workdir, "imported", "smollm2"),
        "minilm": os.path.join(workdir, "minilm_sst2"),
        "student": os.path.join(workdir, "cnn_student"),
        "smollm2": os.path.join(workdir, "smollm2_lora"),
    }


def sources(journey: ml_collections.ConfigDict) -> dict[str, str]:
    """The files to import; a missing one is a ConfigError naming --pretrained_dir."""
    from tfllm.errors import ConfigError

    root = os.path.expanduser(journey.pretrained_dir or default_pretrained_dir())
    if not os.path.isdir(root):
        raise ConfigError(
            f"--pretrained_dir: no such directory: {root} "
            f"(run ../shared/tools/fetch-pretrained {root})"
        )
    found = {}
    for name, relative in journey.sources.items():
        path = os.path.join(root, relative)
        if not os.path.exists(path):
            raise ConfigError(
                f"--pretrained_dir: {root} has no {relative} "
                f"(run ../shared/tools/fetch-pretrained {root})"
            )
        found[name] = path
    return found


def read_baseline(workdir: str) -> dict:
    return read_json(os.path.join(layout(workdir)["smollm2"], BASELINE_FILE))
