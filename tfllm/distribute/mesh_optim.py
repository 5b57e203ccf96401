"""AdamW whose update never reads a slot back after writing it, for DTensor meshes.

Keras' Adam `update_step` assigns the moments, then reads them again for the
weight update, relying on tf.function's automatic control dependencies to
order the read after the write. On a DTensor mesh with a data-parallel
(`batch`) axis of 2 or more, that order is lost: measured on TF 2.21 with a
2 × 2 mesh of logical CPUs, every weight's Adam step came out as exactly zero
(the moments were updated correctly, the weights not at all), while SGD
without momentum and 1 × N meshes were right. This update computes the new
moments as tensors and uses those values directly, the same arithmetic with
no read-after-write, so it is correct on any mesh. The decoupled weight decay
is folded into the same single write for the same reason. Same variables, same
checkpoint keys as `keras.optimizers.AdamW` (it is one).
"""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="tfllm")
class MeshAdamW(keras.optimizers.AdamW):
    """`keras.optimizers.AdamW` (weight_decay=0 gives Adam) safe on DTensor meshes."""

    def update_step(self, gradient, variable, learning_rate):
        lr = ops.cast(learning_rate, variable.dtype)
        gradient = ops.cast(gradient, variable.dtype)
        local_step = ops.cast(self.iterations + 1, variable.dtype)
        beta_1_power = ops.power(ops.cast(self.beta_1, variable.dtype), local_step)
        beta_2_power = ops.power(ops.cast(self.beta_2, variable.dtype), local_step)
        index = self._get_variable_index(variable)
        m, v = self._momentums[index], self._velocities[index]
        alpha = lr * ops.sqrt(1 - beta_2_power) / (1 - beta_1_power)
        new_m = m + (gradient - m) * (1 - self.beta_1)
        new_v = v + (ops.square(gradient) - v) * (1 - self.beta_2)
        self.assign(m, new_m)
        self.assign(v, new_v)
        if self.amsgrad:
            v_hat = self._velocity_hats[index]
            new_v = ops.maximum(v_hat, new_v)
            self.assign(v_hat, new_v)
        step = (new_m * alpha) / (ops.sqrt(new_v) + self.epsilon)
        if self.weight_decay and self._use_weight_decay(variable):
            step += variable * ops.cast(self.weight_decay, variable.dtype) * lr
        self.assign_sub(variable, step)

    def _apply_weight_decay(self, variables):
        """Decay happens inside `update_step` (one write per variable)."""
        del variables
