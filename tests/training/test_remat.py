"""Block checkpointing (`config.runtime.remat`): a fine-tune with it trains exactly as
one without (same losses, step for step), and the settings it cannot honour are one
line before anything is written.

Per-family gradients with and without remat are the shared harness's
`run_remat_test` (tests/harness.py); the memory it saves on SmolLM2 is measured by
`scripts/measure_lora.py --remat` (docs/finetuning.md).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tfllm.cli.common import setup_runtime
from tfllm.config import base_config, load_workdir_config, validate
from tfllm.errors import ConfigError


def _losses(workdir: str) -> list[float]:
    history = json.load(open(os.path.join(workdir, "history.json")))["history"]
    return [h["loss"] for h in history]


@pytest.mark.parametrize("lora_rank", [0, 4])
def test_remat_trains_exactly_as_without(trained_workdir, tmp_path, capsys, lora_rank):
    from tfllm.training.run import train_lm

    runs = {}
    for remat in (False, True):
        config = load_workdir_config(trained_workdir)  # the tiny GPT, 40 steps
        config.model.dropout = 0.0  # remat's condition: no dropout masks to redraw
        config.train.update(init_from=trained_workdir, num_steps=4, steps_per_loop=1,
                            eval_every=4, checkpoint_every=4, lora_rank=lora_rank,
                            sample_tokens=0)  # fmt: skip
        config.runtime.remat = remat
        setup_runtime(config)
        workdir = str(tmp_path / f"remat_{remat}")
        train_lm(config, workdir)
        runs[remat] = _losses(workdir)
    capsys.readouterr()
    assert len(runs[True]) == 4
    np.testing.assert_allclose(runs[True], runs[False], rtol=1e-5)


@pytest.mark.parametrize(
    "changes, words",
    [
        ({"model.dropout": 0.1}, "config.runtime.remat: needs config.model.dropout=0 (got 0.1)"),
        ({"model.name": "cnn_classifier", "data.dataset": "sst2", "model.dropout": 0.0},
         "config.runtime.remat: cnn_classifier has no transformer blocks to recompute"),
        ({"model.dropout": 0.0, "runtime.tensor_parallel": 2},
         "config.runtime.remat: runs with data parallelism only"),
    ],
)  # fmt: skip
def test_settings_remat_cannot_honour_are_one_line(changes, words):
    config = base_config()
    config.runtime.remat = True
    for key, value in changes.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises(ConfigError) as info:
        validate(config)
    assert str(info.value).startswith(words) and "\n" not in str(info.value)
