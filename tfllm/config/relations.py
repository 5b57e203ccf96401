"""Cross-field rules: what no single key's type can say.

Per-key rules come from the schemas (`tfllm.config.fields`); these compare
keys with each other (heads divide the width, warmup fits in training) or
depend on the model family and the runtime together (tensor and pipeline
parallelism exist for some families and strategies only). `validate` runs
them after every key has passed its own rule, so each value here already has
the right type and range.
"""

from __future__ import annotations

import ml_collections
from absl import logging

from tfllm.config.names import CLASSIFIER_NAMES
from tfllm.errors import ConfigError


def check_relations(config: ml_collections.ConfigDict) -> None:
    """Raises ConfigError on the first relation between keys that does not hold.

    One relation is fixed instead (`fit_warmup`): a warmup longer than the run.
    """
    model, train, runtime, data = config.model, config.train, config.runtime, config.data
    if model.hidden_dim % model.num_heads:
        raise ConfigError(
            f"config.model.hidden_dim: {model.hidden_dim} is not divisible by "
            f"config.model.num_heads={model.num_heads}"
        )
    if not data.train_path and not data.dataset:
        raise ConfigError("config.data.train_path: empty, and no bundled config.data.dataset set")
    fit_warmup(train)
    if runtime.profile_steps and runtime.profile_steps[1] > train.num_steps:
        raise ConfigError(
            f"config.runtime.profile_steps: stop {runtime.profile_steps[1]} is past "
            f"config.train.num_steps={train.num_steps}"
        )
    if runtime.logical_cpus > 1 and runtime.strategy not in ("mirrored", "default"):
        raise ConfigError(
            "config.runtime.logical_cpus: only meaningful with strategy 'mirrored', "
            f"got strategy {runtime.strategy!r}"
        )
    if train.batch_size % train.grad_accum_steps:
        raise ConfigError(
            f"config.train.grad_accum_steps: {train.grad_accum_steps} does not divide "
            f"config.train.batch_size={train.batch_size}"
        )
    if model.name in CLASSIFIER_NAMES:
        if not data.label_field:
            raise ConfigError(f"config.data.label_field: empty, but {model.name} needs labels")
        if not data.train_path and data.dataset == "shakespeare":
            raise ConfigError(
                f"config.data.dataset: 'shakespeare' has no labels for {model.name} "
                "(use 'sst2' or set config.data.train_path to a labelled tsv/csv/jsonl file)"
            )
        if data.train_path and data.format == "text":
            raise ConfigError(
                f"config.data.format: 'text' files have no labels for {model.name} "
                "(use tsv, csv or jsonl)"
            )
        if model.name == "cnn_classifier" and model.cnn_pooling == "max_pool_flatten":
            if len(model.conv_widths) != 1:
                raise ConfigError(
                    "config.model.conv_widths: cnn_pooling 'max_pool_flatten' uses one Conv1D, "
                    f"give exactly one width, got {list(model.conv_widths)}"
                )
        if model.name == "transformer_classifier" and train.freeze_blocks > model.num_layers:
            raise ConfigError(
                f"config.train.freeze_blocks: {train.freeze_blocks} exceeds "
                f"config.model.num_layers={model.num_layers}"
            )
    if data.response_field:
        check_instruction_data(config)
    check_tensor_parallel(config)
    check_pipeline(config)
    check_lora(config)
    check_remat(config)


def check_instruction_data(config: ml_collections.ConfigDict) -> None:
    """Prompt/response pairs train a causal LM, from a file with fields, on one device
    group (pipeline/tensor-parallel steps compute the windowed LM loss themselves)."""
    model, data, runtime = config.model, config.data, config.runtime
    if model.name in CLASSIFIER_NAMES:
        raise ConfigError(
            f"config.data.response_field: {model.name} is a classifier; instruction tuning "
            "trains a language model (gpt or llama)"
        )
    if not data.train_path or data.format == "text":
        raise ConfigError(
            "config.data.response_field: prompt/response pairs come from a tsv, csv or jsonl "
            "file in config.data.train_path (with config.data.format set to it)"
        )
    if data.response_field == data.text_field:
        raise ConfigError(
            f"config.data.response_field: {data.response_field!r} is also the prompt's field "
            "(config.data.text_field)"
        )
    if runtime.tensor_parallel > 1 or runtime.pipeline_stages > 1:
        raise ConfigError(
            "config.data.response_field: instruction tuning runs data parallel only "
            "(set config.runtime.tensor_parallel and pipeline_stages to 1)"
        )


def check_lora(config: ml_collections.ConfigDict) -> None:
    """LoRA adapts the transformer families' kernels, on one host's strategies.

    The CNN and MLP classifiers have no attention or MLP blocks to adapt; the
    parameter-server, tensor-parallel and pipeline layouts place or shard the
    kernels themselves and were not built (nor tested) with adapters beside them.
    """
    rank, runtime = config.train.lora_rank, config.runtime
    if not rank:
        return
    if config.model.name in ("cnn_classifier", "mlp_classifier"):
        raise ConfigError(
            f"config.train.lora_rank: {rank} needs a transformer model; {config.model.name} "
            "has no attention or MLP blocks to adapt (set it to 0)"
        )
    layout = (
        f"strategy {runtime.strategy!r}" if runtime.strategy == "parameter_server"
        else f"tensor_parallel={runtime.tensor_parallel}" if runtime.tensor_parallel > 1
        else f"pipeline_stages={runtime.pipeline_stages}" if runtime.pipeline_stages > 1
        else ""
    )  # fmt: skip
    if layout:
        raise ConfigError(
            f"config.train.lora_rank: {rank} is not supported with {layout} (LoRA runs on the "
            "default, one_device, mirrored, multi_worker and tpu strategies)"
        )


def check_remat(config: ml_collections.ConfigDict) -> None:
    """Block checkpointing needs transformer blocks, no dropout (the recomputation would
    draw new masks: `tfllm.models.remat`) and the data-parallel layouts (the tensor- and
    pipeline-parallel steps run their blocks themselves)."""
    model, runtime = config.model, config.runtime
    if not runtime.remat:
        return
    if model.name in ("cnn_classifier", "mlp_classifier"):
        raise ConfigError(
            f"config.runtime.remat: {model.name} has no transformer blocks to recompute "
            "(set it to False)"
        )
    if model.dropout > 0:
        raise ConfigError(
            f"config.runtime.remat: needs config.model.dropout=0 (got {model.dropout}); "
            "recomputed blocks would draw new dropout masks and the gradients would not match "
            "the loss"
        )
    if runtime.tensor_parallel > 1 or runtime.pipeline_stages > 1:
        raise ConfigError(
            "config.runtime.remat: runs with data parallelism only (set "
            "config.runtime.tensor_parallel and pipeline_stages to 1)"
        )


def fit_warmup(train: ml_collections.ConfigDict) -> None:
    """Shortens a warmup longer than the run to the run, with one warning line.

    A quick run (`--config.train.num_steps=30` on a recipe warming up for 100)
    is what users do all the time; refusing it helped no one. Every schedule
    (`tfllm.training.optim`) stays valid with warmup == num_steps (cosine and
    linear decay over max(1, num_steps - warmup) steps). The value is changed
    in the config itself, so config.json records what the run used and a
    resume with the same flags gets the same schedule.
    """
    if train.warmup_steps <= train.num_steps:
        return
    logging.warning(
        "config.train.warmup_steps: %d exceeds config.train.num_steps=%d; "
        "warming up for all %d steps instead",
        train.warmup_steps,
        train.num_steps,
        train.num_steps,
    )
    train.warmup_steps = train.num_steps


def check_tensor_parallel(config: ml_collections.ConfigDict) -> None:
    """Tensor parallelism splits heads and FFN units evenly, on a DTensor mesh.

    Only the transformer models have the Megatron blocks it splits (the GPT
    and the transformer classifier, which shares the GPT's block layers).
    """
    model, runtime = config.model, config.runtime
    n = runtime.tensor_parallel
    if n == 1:
        return
    if model.name not in ("gpt", "transformer_classifier"):
        raise ConfigError(
            f"config.runtime.tensor_parallel: {n} is implemented for models 'gpt' and "
            f"'transformer_classifier' only, got config.model.name={model.name!r}"
        )
    for key in ("num_heads", "intermediate_dim"):
        if model[key] % n:
            raise ConfigError(
                f"config.runtime.tensor_parallel: {n} does not divide "
                f"config.model.{key}={model[key]}"
            )
    if runtime.strategy != "default":
        raise ConfigError(
            f"config.runtime.tensor_parallel: {n} runs on its own DTensor mesh (data parallel "
            f"on its batch axis); set strategy 'default', got {runtime.strategy!r}"
        )
    if runtime.jit_compile:
        raise ConfigError(
            f"config.runtime.jit_compile: not supported with tensor_parallel={n} "
            "(DTensor programs are not XLA-compiled here)"
        )
    if runtime.pipeline_stages > 1:
        raise ConfigError(
            f"config.runtime.pipeline_stages: {runtime.pipeline_stages} cannot be combined "
            f"with tensor_parallel={n}"
        )
    if config.train.optimizer not in ("adam", "adamw"):
        raise ConfigError(
            f"config.train.optimizer: {config.train.optimizer!r} is not supported with "
            f"tensor_parallel={n} (use adamw or adam; see docs/distributed.md)"
        )
    method = config.get("compress", {}).get("method", "")
    if method:
        raise ConfigError(
            f"config.compress.method: {method!r} does not run under tensor_parallel={n}"
        )


def check_pipeline(config: ml_collections.ConfigDict) -> None:
    """GPipe splits the GPT's blocks over K devices and each batch into M micro-batches.

    Micro-batches compose with `train.grad_accum_steps` (each accumulation step
    is one pipelined batch of M micro-batches), so the batch must split into
    both. Tensor parallelism is refused in `check_tensor_parallel`.
    """
    model, runtime, train = config.model, config.runtime, config.train
    k, m = runtime.pipeline_stages, runtime.num_microbatches
    if k == 1:
        if m != 1:
            raise ConfigError(
                f"config.runtime.num_microbatches: {m} needs config.runtime.pipeline_stages > 1 "
                "(to split a batch on one device use config.train.grad_accum_steps)"
            )
        return
    if model.name != "gpt":
        raise ConfigError(
            f"config.runtime.pipeline_stages: {k} is implemented for model 'gpt' only, "
            f"got config.model.name={model.name!r}"
        )
    if k > model.num_layers:
        raise ConfigError(
            f"config.runtime.pipeline_stages: {k} stages exceed "
            f"config.model.num_layers={model.num_layers} (each stage needs a block)"
        )
    if runtime.strategy != "default":
        raise ConfigError(
            f"config.runtime.pipeline_stages: {k} places its stages on devices itself; set "
            f"strategy 'default', got {runtime.strategy!r}"
        )
    if runtime.jit_compile:
        # Measured (TF 2.21): "Trying to access resource ... located in device
        # CPU:1 from device CPU:0" — an XLA cluster runs on one device.
        raise ConfigError(
            f"config.runtime.jit_compile: not supported with pipeline_stages={k} (XLA compiles "
            "the step for one device; the stages' variables live on several)"
        )
    per_step = train.batch_size // train.grad_accum_steps
    if per_step % m:
        accum = (
            f" (config.train.batch_size={train.batch_size} / "
            f"grad_accum_steps={train.grad_accum_steps})"
            if train.grad_accum_steps > 1
            else ""
        )
        raise ConfigError(
            f"config.runtime.num_microbatches: {m} does not divide the per-replica batch "
            f"{per_step}{accum}"
        )
    method = config.get("compress", {}).get("method", "")
    if method:
        raise ConfigError(
            f"config.compress.method: {method!r} does not run under pipeline_stages={k}"
        )
