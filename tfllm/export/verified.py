"""Writing a SavedModel only once it has been verified, and what every
artifact records about the machine that made it.

Both SavedModel exporters (language model, classifier) follow the same steps:
write the archive into a temp dir beside the target, reload it with
`tf.saved_model.load` exactly as a server would, let the caller compare its
outputs with the Keras model, and only then rename it into place with its
`verification.json`. A failed check leaves nothing at the target. The TFLite
counterpart is `tfllm.export.litert.write_verified_tflite`.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from typing import Any

import keras
import keras_hub
import tensorflow as tf
import tensorflow_text  # registers the tokenizer ops a reloaded SavedModel runs

from tfllm.data.tokenizer import quiet_sentencepiece_logs
from tfllm.errors import TfllmError
from tfllm.utils.io import atomic_directory, atomic_write_json


class VerificationError(TfllmError):
    """The exported artifact disagrees with the Keras model; nothing was written."""


def dir_size(path: str) -> int:
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def versions() -> dict[str, str]:
    """Library versions and machine, recorded beside every artifact."""
    return {
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "keras_hub": keras_hub.__version__,
        "tensorflow_text": tensorflow_text.__version__,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "cpus": str(os.cpu_count()),
    }


def write_verified_saved_model(
    target: str,
    archive: keras.export.ExportArchive,
    verify: Callable[[Any], dict[str, Any]],
) -> dict[str, Any]:
    """Writes `archive` to `target` only if `verify(reloaded SavedModel)` passes.

    `verify` runs the reloaded artifact, compares it with the Keras model and
    returns its part of the record, raising `VerificationError` on a parity
    break (the temp dir is then removed). The shared fields (size, signatures,
    versions, seconds) are added here and the whole record becomes
    `verification.json`. Returns the record.
    """
    started = time.time()
    with atomic_directory(target) as tmp:
        archive.write_out(str(tmp), verbose=False)
        with quiet_sentencepiece_logs():  # loading re-creates the tokenizer op
            loaded = tf.saved_model.load(str(tmp))
        record = {
            "format": "saved_model",
            **verify(loaded),
            "size_bytes": dir_size(str(tmp)),
            "signatures": sorted(loaded.signatures.keys()),
            "versions": versions(),
        }
        record["seconds"] = round(time.time() - started, 2)
        atomic_write_json(os.path.join(tmp, "verification.json"), record)
    return record


def load_serving(path: str):
    """Reloads an exported SavedModel (tensorflow_text, imported above, registers its ops)."""
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise TfllmError(f"{path}: no SavedModel here (run tfllm-export --format=saved_model)")
    with quiet_sentencepiece_logs():  # loading re-creates the tokenizer op
        return tf.saved_model.load(path)
