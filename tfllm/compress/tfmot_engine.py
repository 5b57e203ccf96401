"""The one place tfllm imports a non-public tensorflow-model-optimization module.

tfmot's Keras wrappers (`prune_low_magnitude`) reject Keras 3 models, but its
mask engine (`pruning_impl.Pruning`: magnitude thresholds, mask and weight
updates that know about distribution strategies) and its m-by-n mask builder
work on Keras 3 variables (DESIGN §2). They live under tfmot's `python.core`
path, which is not public API, so the imports are isolated here and
`tests/compress/test_tfmot_engine.py` fails loudly if tfmot moves or changes
them. setup.py pins tensorflow-model-optimization to 0.8.x for the same reason.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import tensorflow as tf
from tensorflow_model_optimization.python.core.sparsity.keras import (
    pruning_impl,
    pruning_utils,
)

# What the rest of tfllm may rely on; the engine test checks each one exists.
ENGINE_API = ("conditional_mask_update", "weight_mask_op")


def magnitude_engine(
    step_fn: Callable[[], tf.Tensor],
    pruning_vars: Sequence[tuple[tf.Variable, tf.Variable, tf.Variable]],
    schedule,
) -> pruning_impl.Pruning:
    """tfmot's unstructured magnitude pruning over (weight, mask, threshold) triples.

    `schedule` is a public `tfmot.sparsity.keras.PruningSchedule`; element-wise
    masks (block size 1×1) work for kernels of any rank, EinsumDense's 3-D
    attention kernels included.
    """
    return pruning_impl.Pruning(
        training_step_fn=step_fn,
        pruning_vars=list(pruning_vars),
        pruning_schedule=schedule,
        block_size=(1, 1),
        block_pooling_type="AVG",
    )


def m_by_n_mask(matrix: tf.Tensor, m_by_n: tuple[int, int]) -> tf.Tensor:
    """tfmot's m-by-n mask of a 2-D [out, in] matrix: m zeros in every n along `in`."""
    return pruning_utils.generate_m_by_n_mask(matrix, m_by_n)
