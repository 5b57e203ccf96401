"""Tasks: what the one training loop needs to know about a model family.

The loop in `step.py` and `controller.py` (strategy, inner loops, clipping, checkpoints) is
the same for every model; a task supplies the rest: its training batches, its
per-example loss, its eval metrics and how to initialise from another
workdir. `LMTask` trains next-token prediction on token windows;
`InstructionTask` trains it on prompt/response rows (loss on the response);
`ClassificationTask` trains a text classifier on labelled rows.
"""

from __future__ import annotations

import abc
import math

import keras
import numpy as np
import tensorflow as tf

from tfllm.config import load_workdir_config
from tfllm.data.classification_data import EncodedSplit, make_classification_dataset
from tfllm.data.instruction_data import EncodedPairs, make_pairs_dataset
from tfllm.data.lm_data import make_lm_dataset
from tfllm.distribute.strategy import finite_batches, takes_sharded_inputs
from tfllm.errors import ConfigError
from tfllm.evaluation.predict import (
    predict_probabilities,
    predict_probabilities_sharded,
    quick_classification_metrics,
    token_cross_entropy,
)
from tfllm.inference.loading import load_trained
from tfllm.models.lora import copy_weights, lora_settings
from tfllm.utils.checkpoints import restore_weights


class Task(abc.ABC):
    """The task-specific half of training."""

    throughput_unit = "tokens"  # what the progress line counts per second
    tokens_per_example: float = 1.0  # for tokens/s: real tokens in one training example

    @abc.abstractmethod
    def train_dataset(
        self, batch_size: int, seed: int, ctx: tf.distribute.InputContext | None
    ) -> tf.data.Dataset:
        """Endless, shuffled (inputs, targets) batches of `batch_size` for one input pipeline."""

    @abc.abstractmethod
    def per_example_loss(
        self, model: keras.Model, inputs: tf.Tensor, targets: tf.Tensor, training: bool
    ) -> tf.Tensor:
        """Loss per example [b], float32; the loop averages it over the global batch."""

    @abc.abstractmethod
    def evaluate(
        self, model: keras.Model, strategy: tf.distribute.Strategy, global_batch: int
    ) -> dict[str, float]:
        """Eval metrics with at least `eval_loss` (early stopping reads it); {} if no eval split."""

    @abc.abstractmethod
    def describe(self, results: dict[str, float]) -> str:
        """One line for the progress log."""

    def train_scalars(self, loss: float) -> dict[str, float]:
        """Extra TensorBoard scalars derived from the training loss."""
        del loss
        return {}

    def initialize_from(self, model: keras.Model, workdir: str, checkpoint: str) -> str:
        """`train.init_from`: restores the model's weights from another run's checkpoint
        (or an imported one); every weight must find its value, or one line says so.

        A LoRA source is loaded merged (its adapters folded into the kernels) and
        copied weight by weight: restoring its checkpoint would read the base only."""
        if lora_settings(load_workdir_config(workdir).train).rank:
            source = load_trained(workdir)
            try:
                copy_weights(model, source.model)
            except ValueError as e:
                raise ConfigError(f"config.train.init_from: {e}") from None
            return f"Initialised model weights from {source.checkpoint} (LoRA adapters merged)"
        restore_weights(
            checkpoint,
            {"model": model},
            partial=True,  # the source run's optimizer slots are not wanted
            mismatch="config.train.init_from: the checkpoint does not match config.model",
        )
        return f"Initialised model weights from {checkpoint}"


class LMTask(Task):
    """Causal language modelling on one token stream cut into windows."""

    def __init__(
        self,
        train_ids: np.ndarray,
        eval_ids: np.ndarray | None,
        seq_len: int,
        eval_batches: int = 0,
    ) -> None:
        self.train_ids = train_ids
        self.eval_ids = eval_ids
        self.seq_len = seq_len
        self.tokens_per_example = float(seq_len)
        self.eval_batches = eval_batches
        self._eval_steps: dict[int, tf.types.experimental.GenericFunction] = {}

    def train_dataset(self, batch_size, seed, ctx):
        return make_lm_dataset(
            self.train_ids,
            self.seq_len,
            batch_size,
            shuffle=True,
            repeat=True,
            seed=seed,
            input_context=ctx,
        )

    def per_example_loss(self, model, inputs, targets, training):
        logits = model(inputs, training=training)
        return tf.reduce_mean(token_cross_entropy(targets, logits), axis=-1)

    def _eval_step(self, model: keras.Model, strategy: tf.distribute.Strategy):
        key = id(model)
        if key not in self._eval_steps:

            def replica_eval(inputs, targets):
                ce = token_cross_entropy(targets, model(inputs, training=False))
                return tf.reduce_sum(ce), tf.cast(tf.size(ce), tf.float32)

            @tf.function
            def eval_step(inputs, targets):
                total, count = strategy.run(replica_eval, args=(inputs, targets))
                return (
                    strategy.reduce(tf.distribute.ReduceOp.SUM, total, axis=None),
                    strategy.reduce(tf.distribute.ReduceOp.SUM, count, axis=None),
                )

            self._eval_steps[key] = eval_step
        return self._eval_steps[key]

    def evaluate(self, model, strategy, global_batch):
        """Mean token loss and perplexity on the eval stream."""
        if self.eval_ids is None:
            return {}

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return make_lm_dataset(
                self.eval_ids,
                self.seq_len,
                ctx.get_per_replica_batch_size(global_batch),
                shuffle=False,
                repeat=False,
                input_context=ctx,
            )

        step = self._eval_step(model, strategy)
        total, count = 0.0, 0.0
        for i, (inputs, targets) in enumerate(finite_batches(strategy, dataset_fn)):
            if self.eval_batches and i >= self.eval_batches:
                break
            batch_total, batch_count = step(inputs, targets)
            total += float(batch_total)
            count += float(batch_count)
        if count == 0:
            raise ConfigError("config.data: the eval split is smaller than one batch")
        loss = total / count
        return {"eval_loss": loss, "perplexity": math.exp(min(loss, 50.0))}

    def describe(self, results):
        return f"eval loss {results['eval_loss']:.4f}, perplexity {results['perplexity']:.2f}"

    def train_scalars(self, loss):
        return {"perplexity": math.exp(min(loss, 50.0))}


class InstructionTask(Task):
    """Instruction tuning: next-token loss on the response tokens of prompt/response rows
    (`tfllm.data.instruction_data` says how rows and weights are made).

    A row's loss is the mean over its response tokens, so every pair counts
    once whatever its length (a long answer does not drown a short one); eval
    reports the token-weighted mean over all response tokens, whose exp is
    the response perplexity.
    """

    def __init__(
        self, train: EncodedPairs, evaluation: EncodedPairs | None, eval_batches: int = 0
    ) -> None:
        self.train = train
        self.eval = evaluation
        self.eval_batches = eval_batches
        self.tokens_per_example = float(np.count_nonzero(train.ids) / max(len(train), 1))
        self._eval_steps: dict[int, tf.types.experimental.GenericFunction] = {}

    def train_dataset(self, batch_size, seed, ctx):
        return make_pairs_dataset(
            self.train, batch_size, shuffle=True, repeat=True, seed=seed, input_context=ctx
        )

    def per_example_loss(self, model, inputs, targets, training):
        targets, weights = targets
        ce = token_cross_entropy(targets, model(inputs, training=training))
        return tf.reduce_sum(ce * weights, -1) / tf.maximum(tf.reduce_sum(weights, -1), 1.0)

    def _eval_step(self, model: keras.Model, strategy: tf.distribute.Strategy):
        """Traced once per model: a new tf.function per eval would retrace every time."""
        key = id(model)
        if key not in self._eval_steps:

            def replica(inputs, targets, weights):
                ce = token_cross_entropy(targets, model(inputs, training=False))
                return tf.reduce_sum(ce * weights), tf.reduce_sum(weights)

            @tf.function
            def eval_step(inputs, targets, weights):
                total, count = strategy.run(replica, args=(inputs, targets, weights))
                return tuple(strategy.reduce("SUM", x, axis=None) for x in (total, count))

            self._eval_steps[key] = eval_step
        return self._eval_steps[key]

    def evaluate(self, model, strategy, global_batch):
        """Response-token loss and perplexity on the eval pairs."""
        if self.eval is None:
            return {}
        eval_step = self._eval_step(model, strategy)

        def dataset_fn(ctx: tf.distribute.InputContext) -> tf.data.Dataset:
            return make_pairs_dataset(
                self.eval,
                ctx.get_per_replica_batch_size(global_batch),
                shuffle=False,
                repeat=False,
                drop_remainder=False,
                input_context=ctx,
            )

        total, count = 0.0, 0.0
        for i, (inputs, (targets, weights)) in enumerate(finite_batches(strategy, dataset_fn)):
            if self.eval_batches and i >= self.eval_batches:
                break
            batch_total, batch_count = eval_step(inputs, targets, weights)
            total, count = total + float(batch_total), count + float(batch_count)
        loss = total / max(count, 1.0)
        return {
            "eval_loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "eval_response_tokens": count,
        }

    def describe(self, results):
        return (
            f"eval loss {results['eval_loss']:.4f} on response tokens, "
            f"perplexity {results['perplexity']:.2f}"
        )

    def train_scalars(self, loss):
        return {"perplexity": math.exp(min(loss, 50.0))}


class ClassificationTask(Task):
    """Text classification: softmax cross entropy, optionally class-weighted.

    Eval runs the model outside `strategy.run` on every worker (the eval split
    is small, and this needs no cross-replica reduction of predictions), so
    all workers compute the same numbers.
    """

    throughput_unit = "examples"

    def __init__(
        self,
        train: EncodedSplit,
        evaluation: EncodedSplit | None,
        num_classes: int,
        max_length: int,
        *,
        weights: np.ndarray | None = None,
        static_shapes: bool = False,
        eval_batches: int = 0,
    ) -> None:
        self.train = train
        self.eval = evaluation
        self.num_classes = num_classes
        self.max_length = max_length
        self.weights = None if weights is None else tf.constant(weights, tf.float32)
        self.static_shapes = static_shapes
        self.eval_batches = eval_batches
        self.tokens_per_example = train.mean_length

    def train_dataset(self, batch_size, seed, ctx):
        return make_classification_dataset(
            self.train,
            batch_size,
            shuffle=True,
            repeat=True,
            seed=seed,
            max_length=self.max_length,
            static_shapes=self.static_shapes,
            input_context=ctx,
        )

    def per_example_loss(self, model, inputs, targets, training):
        logits = model(inputs, training=training)
        loss = token_cross_entropy(targets, logits)
        if self.weights is not None:
            loss *= tf.gather(self.weights, targets)
        return loss

    def evaluate(self, model, strategy, global_batch):
        """Quick metrics on the eval split; the same batches on one device or a mesh.

        A tensor-parallel model takes its inputs as DTensors, so on a mesh the
        rows go through `predict_probabilities_sharded` (split along the
        mesh's `batch` axis, probabilities back on the host in row order).
        """
        if self.eval is None:
            return {}
        if takes_sharded_inputs(strategy):
            probabilities = predict_probabilities_sharded(
                strategy,
                model,
                self.eval,
                global_batch,
                max_length=self.max_length,
                max_batches=self.eval_batches,
            )
            labels = self.eval.labels[: len(probabilities)]
            return quick_classification_metrics(labels, probabilities, self.num_classes)
        probabilities = predict_probabilities(
            model,
            self.eval,
            global_batch,
            max_length=self.max_length,
            static_shapes=self.static_shapes,
            max_batches=self.eval_batches,
        )
        labels = self.eval.labels[: len(probabilities)]
        return quick_classification_metrics(labels, probabilities, self.num_classes)

    def describe(self, results):
        return (
            f"eval loss {results['eval_loss']:.4f}, accuracy {results['accuracy']:.4f}, "
            f"macro F1 {results['macro_f1']:.4f}"
        )

    def initialize_from(self, model, workdir, checkpoint):
        """Copies the backbone from another workdir into the classifier: a tfllm GPT's
        embeddings and blocks, or (`backbone_family = "bert"`) an imported BERT encoder."""

        if not hasattr(model, "load_backbone_from"):
            raise ConfigError(
                f"config.train.init_from: {type(model).__name__} has no transformer backbone to "
                "initialise (use model.name=transformer_classifier, bert_classifier or "
                "llama_classifier)"
            )
        family = getattr(model, "backbone_family", "gpt")
        source = load_trained(workdir)
        if source.config.model.name != family:
            raise ConfigError(
                f"config.train.init_from: {workdir} holds a {source.config.model.name!r} model; "
                f"a {type(model).__name__} is initialised from a {family!r} model"
            )
        try:
            model.load_backbone_from(source.model)
        except ValueError as e:
            raise ConfigError(f"config.train.init_from: {e}") from None
        what = {"gpt": "the LM", "llama": "the llama decoder"}.get(family, f"the {family} encoder")
        return f"Initialised the backbone from {what} in {workdir} ({source.checkpoint})"
