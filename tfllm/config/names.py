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
    "bert_classifier", "llama_classifier",
)  # fmt: skip
CLASSIFIER_NAMES = (
    "transformer_classifier", "cnn_classifier", "mlp_classifier", "bert_classifier",
    "llama_classifier",
)  # fmt: skip
# Classifiers on an imported backbone: `train.init_from` names a workdir of this family.
PRETRAINED_CLASSIFIERS = {"bert_classifier": "bert", "llama_classifier": "llama"}
LM_NAMES = ("gpt", "llama")  # causal LMs: tfllm-generate, perplexity, LM exports
ENCODER_NAMES = ("bert",)  # imported encoders (hidden states and embeddings; no LM head)
ACTIVATIONS = ("gelu", "gelu_approximate", "relu", "silu")  # MLP activation of a block
POOLINGS = ("mean", "cls", "last")  # transformer/bert classifiers; llama_classifier: mean, last
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
# LoRA (`config.train.lora_targets`): the Dense/EinsumDense layers adapters go on,
# by a layer's own name. The attention projections of the GPT, transformer and
# bert (classifier) blocks and of Llama are named query/key/value/attention_output;
# the MLP is feedforward_intermediate_dense/feedforward_output_dense (GPT, bert)
# or gate/up/down (Llama). A target is a group or one of these layer names.
LORA_ATTENTION_LAYERS = ("query", "key", "value", "attention_output")
LORA_MLP_LAYERS = (
    "feedforward_intermediate_dense", "feedforward_output_dense", "gate", "up", "down",
)  # fmt: skip
LORA_TARGET_GROUPS = {
    "attention": LORA_ATTENTION_LAYERS,
    "mlp": LORA_MLP_LAYERS,
    "all": LORA_ATTENTION_LAYERS + LORA_MLP_LAYERS,
}
LORA_TARGETS = (*LORA_TARGET_GROUPS, *LORA_ATTENTION_LAYERS, *LORA_MLP_LAYERS)
# `config.train.lora_factorization`; a run saved before the key existed was "keras".
LORA_FACTORIZATIONS = ("paper", "keras")
