"""The config schema: defaults, validation, and loading from a workdir.

A config is one `ml_collections.ConfigDict` with the sections of DESIGN §4:
`data`, `tokenizer`, `model`, `train` (the task) and `runtime`, `export`,
`compress` (how and where it runs), following TF Model Garden's split of task
vs runtime settings. Config files are Python and therefore trusted input.

Every value is validated before any work starts, so a typo fails in a second
with one line naming the key, instead of an hour into training. The rules
come from typed schemas rather than a hand-kept table, so a key's default,
type and range are declared once:

- `names`: the closed sets of names (model families, strategies, ...);
- `fields`: the declarative scheme (`setting(default, check)`, rule derivation);
- `sections`: data, tokenizer, train, runtime, export, compress schemas;
- `model`: the model section, per family (`MODEL_FAMILIES`);
- `relations`: cross-field checks (tensor/pipeline parallelism, labels, ...);
- `schema`: `base_config()` and `validate()`; `files`: loading and saving.

This package is the bottom layer: it imports nothing of tfllm but `errors`.
"""

from tfllm.config.files import (
    config_from_json,
    config_to_json,
    load_config_file,
    load_workdir_config,
)
from tfllm.config.model import MODEL_FAMILIES, family_keys
from tfllm.config.names import (
    ACTIVATIONS,
    BAD_ROW_POLICIES,
    BUNDLED_DATASETS,
    CLASS_WEIGHTS,
    CLASSIFIER_NAMES,
    CNN_POOLINGS,
    COLLECTIVES,
    COMPRESS_METHODS,
    DATA_FORMATS,
    ENCODER_NAMES,
    INFERENCE_STRATEGIES,
    LM_NAMES,
    LR_SCHEDULES,
    MODEL_NAMES,
    OPTIMIZERS,
    POOLINGS,
    PRECISIONS,
    PRETRAINED_CLASSIFIERS,
    PRUNE_SCHEDULES,
    QUANTIZE_MODES,
    SAMPLERS,
    STRATEGIES,
    TOKENIZER_MODEL_TYPES,
)
from tfllm.config.schema import SECTIONS, base_config, validate

__all__ = [
    "ACTIVATIONS",
    "BAD_ROW_POLICIES",
    "BUNDLED_DATASETS",
    "CLASSIFIER_NAMES",
    "CLASS_WEIGHTS",
    "CNN_POOLINGS",
    "COLLECTIVES",
    "COMPRESS_METHODS",
    "DATA_FORMATS",
    "ENCODER_NAMES",
    "LM_NAMES",
    "INFERENCE_STRATEGIES",
    "LR_SCHEDULES",
    "MODEL_FAMILIES",
    "MODEL_NAMES",
    "OPTIMIZERS",
    "POOLINGS",
    "PRECISIONS",
    "PRETRAINED_CLASSIFIERS",
    "PRUNE_SCHEDULES",
    "QUANTIZE_MODES",
    "SAMPLERS",
    "SECTIONS",
    "STRATEGIES",
    "TOKENIZER_MODEL_TYPES",
    "base_config",
    "config_from_json",
    "config_to_json",
    "family_keys",
    "load_config_file",
    "load_workdir_config",
    "validate",
]
