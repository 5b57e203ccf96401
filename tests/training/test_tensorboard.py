"""TensorBoard: the HParams dashboard gets the config; profile_steps writes a trace."""

from __future__ import annotations

import glob
import os

import tensorflow as tf

from tfllm.config import base_config
from tfllm.training.hparams import flat_hparams


def test_flat_hparams_are_scalars_named_by_section():
    flat = flat_hparams(base_config())
    assert flat["model.num_layers"] == 4
    assert flat["train.optimizer"] == "adamw"
    assert flat["model.conv_widths"] == "[3, 4, 5]"  # lists become strings
    assert not any(key.startswith("export.") for key in flat)
    assert all(isinstance(v, (bool, int, float, str)) for v in flat.values())


def test_training_writes_the_hparams_session(trained_workdir):
    from tensorboard.plugins.hparams import plugin_data_pb2

    root = os.path.join(trained_workdir, "tensorboard")
    files = glob.glob(os.path.join(root, "events.out.tfevents.*"))  # the session dir itself
    assert files, os.listdir(root)
    sessions = []
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(path):
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "hparams":
                    data = plugin_data_pb2.HParamsPluginData.FromString(
                        value.metadata.plugin_data.content
                    )
                    if data.HasField("session_start_info"):
                        sessions.append(data.session_start_info)
    assert len(sessions) == 1
    hparams = sessions[0].hparams
    assert hparams["model.num_layers"].number_value == 2  # the tiny run's override
    assert hparams["model.name"].string_value == "gpt"
    assert sessions[0].group_name == "w"  # the workdir's name


def test_profile_steps_write_a_trace(corpus_file, tmp_path, capsys):
    from conftest import build_trainer, tiny_config

    config = tiny_config(corpus_file, steps=30)
    config.runtime.profile_steps = [10, 15]
    trainer = build_trainer(config, tmp_path)
    trainer.train()
    traces = glob.glob(
        str(tmp_path / "tensorboard" / "train" / "plugins" / "profile" / "*" / "*.xplane.pb")
    )
    assert len(traces) == 1 and os.path.getsize(traces[0]) > 0
    assert "Profiled steps 11-15" in capsys.readouterr().out
    # The loops were cut at the window's edges: records at 10 and 15.
    steps = [r["step"] for r in trainer_history(tmp_path)]
    assert 10 in steps and 15 in steps


def trainer_history(workdir) -> list[dict]:
    import json

    with open(os.path.join(workdir, "history.json"), encoding="utf-8") as f:
        return json.load(f)["history"]
