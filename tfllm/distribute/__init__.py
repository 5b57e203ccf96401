"""Where the model runs: tf.distribute strategies, the DTensor mesh (tensor
parallel), GPipe stages (pipeline parallel), parameter-server sharding and
row sharding for inference.

This package depends only on TensorFlow/Keras and `tfllm.config`; it knows
tensors, variables, devices and meshes, not any model's internals. The rest
of tfllm asks it questions through the functions re-exported here, which
answer for any strategy `create_strategy` returns.
"""

from tfllm.distribute.strategy import (
    build_model,
    create_strategy,
    describe,
    host_copy,
    is_chief,
    placement,
    replicas,
    takes_sharded_inputs,
)

__all__ = [
    "build_model",
    "create_strategy",
    "describe",
    "host_copy",
    "is_chief",
    "placement",
    "replicas",
    "takes_sharded_inputs",
]
