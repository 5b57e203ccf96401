"""Magnitude pruning (and 2:4 structured sparsity) of any tfllm model, on tfmot.

tfmot's `prune_low_magnitude` wrapper rejects Keras 3 models, so instead of
wrapping layers this plugin gives tfmot's own pieces the Keras 3 kernels
directly: the public `PolynomialDecay` / `ConstantSparsity` schedules decide
when and how much, and tfmot's mask engine (`tfmot_engine`) computes the
thresholds and masks and writes `weight * mask` back after every optimizer
update. The masks are checkpointed with the model, so a resumed run keeps
them; the weights themselves are masked at every step boundary, so the saved
model is already "stripped": a plain model whose pruned weights are exactly 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import ml_collections
import numpy as np
import tensorflow as tf
import tensorflow_model_optimization as tfmot

from tfllm.compress import tfmot_engine
from tfllm.compress.kernels import PRUNABLE_KINDS, Kernel, find_kernels
from tfllm.config import PRUNE_SCHEDULES
from tfllm.errors import ConfigError
from tfllm.training.plugins import TrainingPlugin


@dataclass(frozen=True)
class PruningSpec:
    """What to prune to, and when (optimizer steps of the pruning run)."""

    sparsity: float
    schedule: str = "polynomial"
    begin_step: int = 0
    end_step: int = 100
    frequency: int = 10
    m_by_n: tuple[int, int] | None = None
    embeddings: bool = True  # prune Embedding tables too (the GPT's tied LM head)

    @property
    def kinds(self) -> tuple[str, ...]:
        return (
            PRUNABLE_KINDS
            if self.embeddings
            else tuple(k for k in PRUNABLE_KINDS if k != "embedding")
        )

    def tfmot_schedule(self) -> tfmot.sparsity.keras.PruningSchedule:
        if self.schedule == "constant":
            return tfmot.sparsity.keras.ConstantSparsity(
                self.sparsity, begin_step=self.begin_step, frequency=self.frequency
            )
        return tfmot.sparsity.keras.PolynomialDecay(
            initial_sparsity=0.0,
            final_sparsity=self.sparsity,
            begin_step=self.begin_step,
            end_step=self.end_step,
            frequency=self.frequency,
        )


def parse_m_by_n(text: str) -> tuple[int, int] | None:
    """'2:4' -> (2, 4); '' -> None."""
    if not text:
        return None
    try:
        m, n = (int(x) for x in text.split(":"))
    except ValueError:
        raise ConfigError(f"--m_by_n: expected M:N such as 2:4, got {text!r}") from None
    if not 0 < m < n:
        raise ConfigError(f"--m_by_n: need 0 < M < N (M zeros in every N weights), got {text!r}")
    return m, n


def spec_from_config(config: ml_collections.ConfigDict) -> PruningSpec:
    """The pruning schedule of a compress run (`config.compress`, `config.train.num_steps`).

    The polynomial ramp ends at `prune_end_fraction` of the run so the last
    steps fine-tune at the final sparsity (recovery), as tfmot's guides advise.
    """
    c = config.compress
    steps = int(config.train.num_steps)
    sparsity = float(c.sparsity)
    if not 0.0 <= sparsity < 1.0:
        raise ConfigError(f"--sparsity: must be in [0, 1), got {sparsity}")
    if c.schedule not in PRUNE_SCHEDULES:
        raise ConfigError(
            f"--schedule: must be one of {', '.join(PRUNE_SCHEDULES)}, got {c.schedule!r}"
        )
    end = max(1, round(steps * float(c.prune_end_fraction)))
    frequency = int(c.prune_frequency) or max(1, end // 10)
    return PruningSpec(
        sparsity=sparsity,
        schedule=c.schedule,
        begin_step=0,
        end_step=end,
        frequency=frequency,
        m_by_n=parse_m_by_n(c.m_by_n),
        embeddings=bool(c.get("prune_embeddings", True)),
    )


class _PruningState(tf.Module):
    """Masks and thresholds, checkpointed as `pruning` beside the model."""

    def __init__(self, masks: list[tf.Variable], thresholds: list[tf.Variable]) -> None:
        super().__init__(name="pruning")
        self.masks = masks
        self.thresholds = thresholds


class PruningPlugin(TrainingPlugin):
    """Prunes every Dense / EinsumDense / Conv1D (and Embedding) kernel of the model."""

    name = "pruning"

    def __init__(self, spec: PruningSpec) -> None:
        self.spec = spec
        self.kernels: list[Kernel] = []
        self._state: _PruningState | None = None
        self._engine = None

    def setup(self, model, optimizer):
        self.kernels = find_kernels(model, self.spec.kinds)
        masks, thresholds, triples = [], [], []
        for kernel in self.kernels:
            weight = kernel.variable.value  # the tf.Variable inside the Keras variable
            label = kernel.name.replace("/", "_")
            mask = tf.Variable(
                tf.ones(kernel.shape, weight.dtype), trainable=False, name=f"{label}_mask"
            )
            threshold = tf.Variable(
                tf.zeros([], weight.dtype), trainable=False, name=f"{label}_threshold"
            )
            masks.append(mask)
            thresholds.append(threshold)
            triples.append((weight, mask, threshold))
        self._state = _PruningState(masks, thresholds)
        self._engine = tfmot_engine.magnitude_engine(
            lambda: optimizer.iterations, triples, self.spec.tfmot_schedule()
        )

    def trackable(self):
        return self._state

    def initialize(self, model):
        """Step 0: masks from the starting weights (2:4 masks are fixed from here on)."""
        if self.spec.m_by_n:
            for kernel, mask in zip(self.kernels, self._state.masks, strict=True):
                matrix = kernel.to_out_in(tf.convert_to_tensor(kernel.variable.value))
                structured = tfmot_engine.m_by_n_mask(matrix, self.spec.m_by_n)
                mask.assign(tf.cast(kernel.from_out_in(structured), mask.dtype))
        else:
            self._engine.conditional_mask_update()
        self._engine.weight_mask_op()
        pattern = (
            f"{self.spec.m_by_n[0]}:{self.spec.m_by_n[1]} structured"
            if self.spec.m_by_n
            else f"{self.spec.schedule} to {self.spec.sparsity:.0%} by step {self.spec.end_step} "
            f"(masks updated every {self.spec.frequency} steps)"
        )
        return f"Pruning {len(self.kernels)} kernels: {pattern}"

    def after_update(self):
        if not self.spec.m_by_n:  # 2:4 masks were fixed at step 0
            self._engine.conditional_mask_update()
        self._engine.weight_mask_op()

    def summary(self, model):
        del model
        report = sparsity_report(self.kernels)
        return {"sparsity": report["sparsity"], "pruned_weights": report["zeros"]}


def sparsity_report(kernels: list[Kernel]) -> dict:
    """Measured zeros in the kernels' weights (not the masks): what an export ships."""
    layers = {}
    zeros = total = 0
    for kernel in kernels:
        value = np.asarray(kernel.variable.numpy())
        z = int(np.sum(value == 0))
        layers[kernel.name] = {
            "kind": kernel.kind,
            "size": int(value.size),
            "sparsity": z / value.size,
        }
        zeros += z
        total += int(value.size)
    return {
        "sparsity": zeros / total if total else 0.0,
        "zeros": zeros,
        "size": total,
        "layers": layers,
    }


def model_sparsity(model: keras.Model) -> dict:
    """`sparsity_report` of every prunable kernel of a model."""
    return sparsity_report(find_kernels(model))
