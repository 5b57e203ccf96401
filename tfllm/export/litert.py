"""TFLite conversion and LiteRT checks shared by every exported model family.

The TFLite converter does the quantization (DESIGN §2: it is the well-kept
engine); LiteRT (`ai_edge_litert`, not the deprecated `tf.lite.Interpreter`)
runs the result. Every `.tflite` is built in a temp dir, loaded back in
LiteRT and checked against the Keras model by a family-specific `verify`
callback before it is renamed into `W/export/tflite_<quantize>/` with its
`verification.json`; a failed check leaves nothing behind.

Quantize modes (what the converter does with them):

- `none`: float32 weights and activations.
- `dynamic`: int8 weights, float activations (dynamic-range quantization).
- `float16`: float16 weights, dequantized to float32 at load.
- `int8`: full-integer post-training quantization calibrated on a
  representative dataset from the training data. Ops with no int8 kernel make
  the strict conversion fail; the converter is then rerun allowing float
  fallback for those ops, and the record says so.
"""

from __future__ import annotations

import gzip
import os
import re
import statistics
import time
from collections.abc import Callable, Iterable
from typing import Any

import tensorflow as tf

from tfllm.errors import TfllmError
from tfllm.export.verified import versions as base_versions
from tfllm.utils.io import atomic_directory, atomic_write_bytes, atomic_write_json
from tfllm.utils.native_stderr import filtered_native_stderr

QUANTIZE_MODES = ("none", "dynamic", "float16", "int8")
TFLITE_FILE = "model.tflite"


class ExportError(TfllmError):
    """The converter could not produce a `.tflite` for this model and mode."""


def tflite_dir(workdir: str, quantize: str) -> str:
    """`W/export/tflite_<quantize>`: where `tfllm-export --format=tflite` writes."""
    return os.path.join(workdir, "export", f"tflite_{quantize}")


def tflite_path(workdir: str, quantize: str) -> str:
    return os.path.join(tflite_dir(workdir, quantize), TFLITE_FILE)


RepresentativeData = Callable[[], Iterable[Any]]


def convert(
    saved_model_dir: str,
    signature_keys: list[str],
    quantize: str,
    representative_dataset: RepresentativeData | None = None,
    float_ops: tuple[str, ...] = (),
    fuse_mul_into_fc: bool = True,
) -> tuple[bytes, dict[str, Any]]:
    """Converts the SavedModel's `signature_keys` to one `.tflite` flatbuffer.

    Returns `(flatbuffer, notes)`; `notes` records how int8 was done.
    `representative_dataset` (int8 only) yields what the converter expects:
    a list of inputs for one signature, or `(signature_key, {name: array})`
    pairs for several. `float_ops` (int8 only): op types kept in float
    (`INT8_ATTENTION_FLOAT_OPS` for transformers, see there).
    `fuse_mul_into_fc=False` keeps a constant multiply (a norm's scale) out of
    the FULLY_CONNECTED weight after it, which would take that weight off the
    block grid `tfllm.export.block_grid` put it on.
    """
    if quantize not in QUANTIZE_MODES:
        choices = ", ".join(QUANTIZE_MODES)
        raise ExportError(f"--quantize: must be one of {choices}, got {quantize!r}")

    def converter(ops: list[tf.lite.OpsSet] | None = None) -> tf.lite.TFLiteConverter:
        conv = tf.lite.TFLiteConverter.from_saved_model(
            saved_model_dir, signature_keys=signature_keys
        )
        conv._experimental_disable_fuse_mul_and_fc = not fuse_mul_into_fc  # noqa: SLF001
        if quantize != "none":
            conv.optimizations = [tf.lite.Optimize.DEFAULT]
        if quantize == "float16":
            conv.target_spec.supported_types = [tf.float16]
        if quantize == "int8":
            if representative_dataset is None:
                raise ExportError("--quantize=int8 needs a representative dataset")
            conv.representative_dataset = representative_dataset
            conv.target_spec.supported_ops = ops
        return conv

    notes: dict[str, Any] = {}
    try:
        if quantize != "int8":
            return converter().convert(), notes
        if float_ops:
            mixed = converter([tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS])
            return _int8_except(mixed, representative_dataset, float_ops), {
                "int8_only": False,
                "int8_float_ops": list(float_ops),
            }
        try:
            blob = converter([tf.lite.OpsSet.TFLITE_BUILTINS_INT8]).convert()
            notes["int8_only"] = True
        except Exception as strict_error:  # noqa: BLE001  (the converter raises many types)
            notes["int8_only"] = False
            notes["int8_strict_error"] = one_line(strict_error)
            blob = converter(
                [tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
            ).convert()
        return blob, notes
    except ExportError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ExportError(f"TFLite conversion ({quantize}) failed: {one_line(e)}") from None


# Op types a transformer's int8 export keeps in float: the attention core.
# Attention scores are masked with a huge negative constant before the
# softmax, so the calibrated int8 range of the score tensor is enormous
# (scale 3.9e6 on the SST-2 transformer) and every real score rounds to the
# same value: attention turns uniform (SST-2: -4.5 accuracy points; the
# quantization debugger located it). MUL is included because the converter
# may fuse the query scaling into the score matmul. All weights stay int8.
INT8_ATTENTION_FLOAT_OPS = ("BATCH_MATMUL", "MUL", "SELECT_V2", "SOFTMAX", "TRANSPOSE", "RESHAPE")


def _int8_except(
    converter: tf.lite.TFLiteConverter,
    representative_dataset: RepresentativeData | None,
    float_ops: tuple[str, ...],
) -> bytes:
    """int8 quantization of every op except the types `float_ops`.

    The converter's selective quantization lives in
    `tf.lite.experimental.QuantizationDebugger` (its `denylisted_ops`); the
    non-debug model it returns is an ordinary `.tflite` with quantize /
    dequantize ops around the float ones.
    """
    import warnings

    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_ops=list(float_ops))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # it builds a (deprecated) tf.lite.Interpreter
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=representative_dataset, debug_options=options
        )
        return debugger.get_nondebug_quantized_model()


def one_line(error: BaseException, limit: int = 300) -> str:
    """The most informative single line of a (often multi-line) converter error."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    for ln in lines:
        if "error:" in ln.lower():
            return ln[:limit]
    return (lines[0] if lines else type(error).__name__)[:limit]


_XNNPACK_INFO = re.compile(rb"^INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.")


def interpreter(
    model: str | bytes, num_threads: int | None = None, *, default_delegates: bool = True
):
    """A LiteRT interpreter for a `.tflite` path or flatbuffer, tensors allocated.

    `default_delegates=False` skips XNNPACK, whose DELEGATE nodes would hide
    the ops it took over (`ops_used` wants the file's real op list).
    """
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    kwargs: dict[str, Any] = {"num_threads": num_threads or os.cpu_count() or 1}
    if not default_delegates:
        kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    if not isinstance(model, bytes) and not os.path.isfile(model):
        raise TfllmError(f"{model}: no .tflite file here (run tfllm-export --format=tflite)")
    with filtered_native_stderr(_XNNPACK_INFO):  # printed once per interpreter
        if isinstance(model, bytes):
            interp = Interpreter(model_content=model, **kwargs)
        else:
            interp = Interpreter(model_path=model, **kwargs)
        interp.allocate_tensors()
    return interp


def ops_used(interp) -> list[str]:
    """Sorted builtin/custom op names in the model (what a runtime must provide).

    LiteRT has no public op listing; `_get_ops_details` is the one the TFLite
    analyzer uses. If a LiteRT release drops it, the record says so rather
    than failing the export.
    """
    try:
        return sorted({d["op_name"] for d in interp._get_ops_details()})
    except Exception as e:  # noqa: BLE001
        return [f"unavailable: {one_line(e)}"]


def latency(run_once: Callable[[], Any], runs: int = 100, warmup: int = 5) -> dict[str, float]:
    """Median (and p10/p90) wall time of `run_once` in milliseconds over `runs` calls."""
    for _ in range(warmup):
        run_once()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run_once()
        times.append((time.perf_counter() - start) * 1000.0)
    times.sort()
    return {
        "median_ms": round(statistics.median(times), 4),
        "p10_ms": round(times[int(0.1 * (runs - 1))], 4),
        "p90_ms": round(times[int(0.9 * (runs - 1))], 4),
        "runs": runs,
    }


def versions() -> dict[str, str]:
    """`saved_model.versions()` plus the LiteRT runtime's."""
    import ai_edge_litert

    return {**base_versions(), "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?")}


def write_verified_tflite(
    target: str,
    flatbuffer: bytes,
    verify: Callable[[str], dict[str, Any]],
    *,
    quantize: str,
    extra_files: dict[str, bytes] | None = None,
    notes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Writes `target/model.tflite` only if `verify(path_in_temp_dir)` passes.

    `verify` loads the temp file in LiteRT, compares it with the Keras model
    and returns its part of the record, raising `VerificationError` on a
    parity break. The shared fields (sizes, ops, versions) are added here and
    the whole record becomes `verification.json`. Returns the record.
    """
    started = time.time()
    with atomic_directory(target) as tmp:
        path = os.path.join(tmp, TFLITE_FILE)
        atomic_write_bytes(path, flatbuffer)
        for name, data in (extra_files or {}).items():
            atomic_write_bytes(os.path.join(tmp, name), data)
        record = {
            "format": "tflite",
            "quantize": quantize,
            **(notes or {}),
            **verify(path),
            "file": TFLITE_FILE,
            "size_bytes": len(flatbuffer),
            "gzip_bytes": len(gzip.compress(flatbuffer, compresslevel=9)),
            "ops": ops_used(interpreter(path, num_threads=1, default_delegates=False)),
            "versions": versions(),
        }
        record["seconds"] = round(time.time() - started, 2)
        atomic_write_json(os.path.join(tmp, "verification.json"), record)
    return record
