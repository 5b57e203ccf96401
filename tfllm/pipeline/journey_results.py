"""The journey's results read back from its parts' files, for the report.

Everything comes from the parts' own files (metrics.json, verification.json,
compression.json), never from memory, so a report rebuilt after a resume
shows the same numbers as the first one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from tfllm.pipeline.common import edge_dir
from tfllm.pipeline.compress_stage import pruned_dir
from tfllm.pipeline.journey_layout import CLASSIFIER_PARTS, FINETUNED, part_dir
from tfllm.utils.io import read_json

_FAMILY = {
    "transformer": "Transformer, fine-tuned from the GPT",
    "cnn": "CNN (Kim 2014), from scratch",
    "mlp": "MLP, bag of embeddings, from scratch",
}


@dataclass
class Variant:
    """One shipped classifier file: a family, or a compressed form of one."""

    label: str
    workdir: str
    metrics: dict
    edge: dict

    @property
    def test(self) -> dict:
        return self.metrics.get("test_split", {})


def read_part(workdir: str) -> tuple[dict, dict]:
    """A part's metrics.json and its LiteRT verification.json ({} where missing)."""
    return (
        read_json(os.path.join(workdir, "metrics.json")),
        read_json(os.path.join(edge_dir(workdir), "verification.json")),
    )


def classifier_variants(workdir: str, configs: dict) -> list[Variant]:
    """The families, then the pruned and the distilled transformer (where they exist)."""
    variants = []
    for part in CLASSIFIER_PARTS:
        d = part_dir(workdir, part)
        variants.append(Variant(_FAMILY[part], d, *read_part(d)))
    pruned = pruned_dir(part_dir(workdir, FINETUNED), configs[FINETUNED])
    record = read_json(os.path.join(pruned, "compression.json"))
    if record:
        label = f"Transformer, pruned {record['settings']['sparsity']:.0%}"
        variants.append(Variant(label, pruned, *read_part(pruned)))
    student = part_dir(workdir, "distil")
    if read_json(os.path.join(student, "compression.json")):
        variants.append(Variant("Transformer student, distilled", student, *read_part(student)))
    return [v for v in variants if v.metrics]
