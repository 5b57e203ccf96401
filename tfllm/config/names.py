"""The closed sets of names a config may use: the one definition in tfllm.

These live at the bottom layer (`tfllm.config` imports nothing else of tfllm
but `tfllm.errors`) so that models, inference and the CLIs can import them
instead of spelling the lists again; a second copy would drift, and then a
name the config accepts would be refused later by the code that uses it.
"""

from __future__ import annotations

# The model families; `tfllm.config.model.MODEL_FAMILIES` says which keys each reads.
MODEL_NAMES = (
    "gpt", "transformer_classifier", "cnn_classifier", "mlp_classifier", "llama", "bert",
)  # fmt: skip
CLASSIFIER_NAMES = ("transformer_classifier", "cnn_classifier", "mlp_classifier")
LM_NAMES = ("gpt", "llama")  # causal LMs: tfllm-generate, perplexity, LM exports
ENCODER_NAMES = ("bert",)  # imported encoders (hidden states and embeddings; no LM head)
ACTIVATIONS = ("gelu", "gelu_approximate", "relu", "silu")  # MLP activation of a block
POOLINGS = ("mean", "cls", "last")  # transformer_classifier
CNN_POOLINGS = ("global_max", "max_pool_flatten")  # cnn_classifier
CLASS_WEIGHTS = ("none", "balanced")
COLLECTIVES = ("auto", "ring", "nccl")
STRATEGIES = ("default", "one_device", "mirrored", "multi_worker", "tpu", "parameter_server")
# The strategies tfllm-evaluate / tfllm-generate run under (--strategy).
INFERENCE_STRATEGIES = STRATEGIES[:4]
COMPRESS_METHODS = ("prune", "qat", "distill", "quantize")
PRUNE_SCHEDULES = ("polynomial", "constant")
QUANTIZE_MODES = ("int8", "int4")  # tfllm-compress --method=quantize (Keras 3 weight-only)
PRECISIONS = ("float32", "mixed_bfloat16", "mixed_float16")
OPTIMIZERS = ("sgd", "adam", "adamw", "adamax")
LR_SCHEDULES = ("constant", "cosine", "linear", "inverse_sqrt", "step")
DATA_FORMATS = ("text", "tsv", "csv", "jsonl")
BAD_ROW_POLICIES = ("skip", "fail")
BUNDLED_DATASETS = ("shakespeare", "sst2")
TOKENIZER_MODEL_TYPES = ("bpe", "unigram")
# Not a config key (tfllm-generate's --sampler), kept here so inference and
# export share one list with the CLIs.
SAMPLERS = ("greedy", "temperature", "top_k", "top_p")
