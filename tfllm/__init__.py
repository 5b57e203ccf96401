"""tfllm: train, compress, export and serve transformer LMs and text classifiers
in TensorFlow / Keras 3."""

__version__ = "0.1.0"
