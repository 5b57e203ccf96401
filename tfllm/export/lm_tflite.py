"""Language model → one `.tflite` with prefill/decode KV-cache signatures, verified.

The signatures and cache layout are documented in `tfllm.inference.lm_tflite_runner`
(and docs/edge.md). Built the way DESIGN §2 measured to work: the Keras model
is tracked by a `keras.export.ExportArchive` (a plain `tf.Module` holding Keras
3 variables converts "fine" into a file with uninitialised variables that
returns NaN), the archive is written as a SavedModel, and the TFLite converter
turns all its signatures into one flatbuffer that shares a single copy of the
weights.

Verification (every quantize mode), on eval windows the run never trained on:

- teacher-forced logits through prefill + decode vs the Keras model's full
  forward pass on the same window: max |Δ logit| and both perplexities;
- prefill at several prompt lengths and buckets vs Keras;
- greedy continuations of `config.export.verify_prompts` vs Keras.

A float export must match Keras within `FLOAT_LOGIT_TOLERANCE` and give
identical greedy text; a quantized one must keep its perplexity within the
mode's allowed relative increase (`PERPLEXITY_TOLERANCE`). The export fails,
leaving nothing behind, when a check breaks.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfllm.data.tokenizer_kinds import tokenizer_files
from tfllm.errors import WorkdirError
from tfllm.export import litert
from tfllm.export.verified import VerificationError
from tfllm.inference.generate import Generator, generate_text
from tfllm.inference.lm_tflite_runner import LiteRTGenerator, LiteRTLM

FLOAT_LOGIT_TOLERANCE = 1e-3
# Allowed relative perplexity increase of the artifact over Keras, per mode.
PERPLEXITY_TOLERANCE = {"none": 0.001, "float16": 0.01, "dynamic": 0.05, "int8": 0.25}
DEFAULT_VERIFY_WINDOWS = 4
CALIBRATION_WINDOWS = 64


def prefill_buckets(max_length: int, requested: tuple[int, ...] | list[int]) -> list[int]:
    """The prompt widths with their own prefill signature; always ends at max_length."""
    return sorted({int(b) for b in requested if 0 < int(b) < max_length} | {max_length})


def cache_names(num_layers: int) -> list[str]:
    """Signature names of the per-layer caches: `kv_cache_0` … `kv_cache_{L-1}`."""
    return [f"kv_cache_{i}" for i in range(num_layers)]


def build_lm_archive(model: keras.Model, buckets: list[int]) -> keras.export.ExportArchive:
    """ExportArchive with `prefill` (max_length), `prefill_<n>` per smaller bucket, `decode`.

    Each layer's cache is its own input/output `kv_cache_<i>` [2 (keys, values),
    1, heads, max_length, head_dim]: `GPT.init_cache`'s (keys, values) pair,
    stacked, so the signature has one cache tensor per layer.
    """
    archive = keras.export.ExportArchive()
    archive.track(model)
    names = cache_names(model.num_layers)
    layer_shape = [2, *model.init_cache(1)[0][0].shape]
    cache_specs = [tf.TensorSpec(layer_shape, tf.float32, name=n) for n in names]

    def outputs(logits: tf.Tensor, caches) -> dict[str, tf.Tensor]:
        return {
            "logits": logits,
            **{n: tf.cast(tf.stack(c), tf.float32) for n, c in zip(names, caches, strict=True)},
        }

    def prefill(tokens, length):
        logits, caches = model.call_with_cache(tokens, model.init_cache(1), tf.constant(0))
        return outputs(tf.gather(logits[0], length[0] - 1)[tf.newaxis], caches)

    def decode(token, position, *caches):
        caches = [tuple(tf.unstack(tf.cast(c, model.compute_dtype))) for c in caches]
        logits, caches = model.call_with_cache(token, caches, position[0])
        return outputs(logits[:, 0], caches)

    for width in buckets:
        archive.add_endpoint(
            prefill_name(width, buckets),
            prefill,
            input_signature=[
                tf.TensorSpec([1, width], tf.int32, name="tokens"),
                tf.TensorSpec([1], tf.int32, name="length"),
            ],
        )
    archive.add_endpoint(
        "decode",
        decode,
        input_signature=[
            tf.TensorSpec([1, 1], tf.int32, name="token"),
            tf.TensorSpec([1], tf.int32, name="position"),
            *cache_specs,
        ],
    )
    return archive


def prefill_name(width: int, buckets: list[int]) -> str:
    """`prefill` for the whole-context bucket, `prefill_<width>` for the others."""
    return "prefill" if width == buckets[-1] else f"prefill_{width}"


def signature_names(buckets: list[int]) -> list[str]:
    return ["decode"] + [prefill_name(width, buckets) for width in buckets]


def eval_windows(ids: np.ndarray, seq_len: int, count: int) -> np.ndarray:
    """The first `count` windows `tfllm-evaluate` scores: [n, seq_len + 1] token ids."""
    ids = np.asarray(ids, np.int32).reshape(-1)
    n = min(count, max(0, (len(ids) - 1) // seq_len))
    windows = [ids[k * seq_len : k * seq_len + seq_len + 1] for k in range(n)]
    return np.stack(windows) if windows else np.zeros([0, seq_len + 1], np.int32)


def representative_dataset(
    model: keras.Model, train_ids: np.ndarray, buckets: list[int], seed: int = 0
):
    """Calibration inputs for every signature, drawn from the training stream.

    Decode inputs need realistic caches, so each one comes from the Keras
    model's own prefill of a training prefix.
    """
    max_length = int(model.max_length)
    rng = np.random.default_rng(seed)
    ids = np.asarray(train_ids, np.int32).reshape(-1)
    starts = rng.integers(0, max(1, len(ids) - max_length - 1), CALIBRATION_WINDOWS)

    def generate() -> Iterator[tuple[str, dict[str, np.ndarray]]]:
        for i, start in enumerate(starts):
            window = ids[start : start + max_length + 1]
            if len(window) < 2:
                continue
            width = buckets[i % len(buckets)]
            # The decode step after it writes cache slot `length`, so the prompt
            # leaves at least one slot free (position max_length does not exist).
            length = int(rng.integers(1, min(width, len(window) - 1, max_length - 1) + 1))
            tokens = np.zeros([1, width], np.int32)
            tokens[0, :length] = window[:length]
            yield (
                prefill_name(width, buckets),
                {
                    "tokens": tokens,
                    "length": np.array([length], np.int32),
                },
            )
            _, cache = model.call_with_cache(
                tf.constant(window[np.newaxis, :length]), model.init_cache(1), 0
            )
            yield (
                "decode",
                {
                    "token": window[np.newaxis, length : length + 1].astype(np.int32),
                    "position": np.array([length], np.int32),
                    **{
                        n: tf.cast(tf.stack(c), tf.float32).numpy()
                        for n, c in zip(cache_names(model.num_layers), cache, strict=True)
                    },
                },
            )

    return generate


def _log_softmax(logits: np.ndarray) -> np.ndarray:
    logits = logits.astype(np.float64)
    shifted = logits - logits.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _nll(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    return -np.take_along_axis(_log_softmax(logits), targets[:, None], axis=-1)[:, 0]


def compare_windows(model: keras.Model, lm, windows: np.ndarray) -> dict[str, Any]:
    """Teacher-forced artifact logits vs Keras on each window: max |Δ| and perplexities."""
    max_diff, keras_nll, artifact_nll = 0.0, [], []
    for window in windows:
        inputs, targets = window[:-1], window[1:]
        reference = model(tf.constant(inputs[np.newaxis]), training=False)[0].numpy()
        exported = lm.teacher_forced_logits(inputs)
        max_diff = max(max_diff, float(np.max(np.abs(exported - reference))))
        keras_nll.append(_nll(reference, targets))
        artifact_nll.append(_nll(exported, targets))
    keras_loss = float(np.mean(np.concatenate(keras_nll)))
    artifact_loss = float(np.mean(np.concatenate(artifact_nll)))
    return {
        "windows": len(windows),
        "tokens": int(sum(len(n) for n in keras_nll)),
        "max_abs_diff": max_diff,
        "keras_perplexity": math.exp(keras_loss),
        "perplexity": math.exp(artifact_loss),
        "perplexity_increase": math.exp(artifact_loss - keras_loss) - 1.0,
    }


def compare_prefill(model: keras.Model, lm, window: np.ndarray) -> float:
    """Max |Δ| of prefill's last logits vs Keras, over lengths that hit every bucket."""
    lengths = sorted({1, *(b for b in lm.buckets if b < len(window)), len(window) // 2})
    worst = 0.0
    for n in lengths:
        if not 1 <= n <= len(window):
            continue
        logits, _ = lm.prefill(window[:n])
        with warnings.catch_warnings():
            # Keras warns about the size-1 softmax axis of a one-token causal mask.
            warnings.filterwarnings("ignore", message="You are using a softmax over axis")
            reference = model(tf.constant(window[np.newaxis, :n]), training=False)
        worst = max(worst, float(np.max(np.abs(logits - reference[0, -1].numpy()))))
    return worst


def export_lm_tflite(
    trained,
    target: str,
    quantize: str,
    *,
    eval_ids: np.ndarray,
    train_ids: np.ndarray,
    verify_windows: int = DEFAULT_VERIFY_WINDOWS,
    max_abs_diff: float | None = None,
    max_perplexity_increase: float | None = None,
) -> dict[str, Any]:
    """Converts, verifies and writes `target/model.tflite` (+ tokenizer, verification.json)."""
    import tempfile

    model, tokenizer, config = trained.model, trained.tokenizer, trained.config
    max_length = int(model.max_length)
    buckets = prefill_buckets(max_length, tuple(config.export.get("prefill_buckets", (32,))))
    windows = eval_windows(eval_ids, max_length, verify_windows)
    if len(windows) == 0:
        raise VerificationError(
            f"not enough eval tokens to verify with one window of {max_length + 1} tokens"
        )
    logit_tolerance = FLOAT_LOGIT_TOLERANCE if max_abs_diff is None else max_abs_diff
    ppl_tolerance = (
        PERPLEXITY_TOLERANCE[quantize] if max_perplexity_increase is None
        else max_perplexity_increase
    )  # fmt: skip
    prompts = list(config.export.verify_prompts)
    max_new = int(config.export.max_new_tokens)

    with tempfile.TemporaryDirectory() as scratch:
        build_lm_archive(model, buckets).write_out(scratch, verbose=False)
        calibration = (
            representative_dataset(model, train_ids, buckets) if quantize == "int8" else None
        )
        blob, notes = litert.convert(
            scratch,
            signature_names(buckets),
            quantize,
            calibration,
            float_ops=litert.INT8_ATTENTION_FLOAT_OPS,  # same masked attention as classifiers
        )

    def verify(path: str) -> dict[str, Any]:
        lm = LiteRTLM(path)
        record: dict[str, Any] = {
            "task": "language_model",
            "signatures": _signature_details(lm.interpreter),
            "prefill_buckets": buckets,
            "cache_layout": "kv_cache_<layer>: [2 (keys, values), 1, heads, max_length, head_dim]",
            **compare_windows(model, lm, windows),
        }
        record["prefill_max_abs_diff"] = compare_prefill(model, lm, windows[0][:-1])
        keras_text = generate_text(Generator(model), tokenizer, prompts, max_new)
        litert_text = generate_text(LiteRTGenerator(lm), tokenizer, prompts, max_new)
        record["greedy"] = {
            "prompts": prompts,
            "max_new_tokens": max_new,
            "keras": keras_text,
            "litert": litert_text,
            "identical": keras_text == litert_text,
        }
        max_seen = max(record["max_abs_diff"], record["prefill_max_abs_diff"])
        zero_cache = lm.empty_cache()
        record["latency"] = {
            "decode": litert.latency(lambda: lm.decode(1, max_length // 2, zero_cache)),
            f"prefill_{buckets[0]}": litert.latency(lambda: lm.prefill(windows[0][: buckets[0]])),
        }
        record["decode_tokens_per_second"] = round(
            1000.0 / record["latency"]["decode"]["median_ms"], 1
        )
        if quantize == "none":
            record["tolerance"] = {"max_abs_diff": logit_tolerance, "greedy": "identical"}
            if max_seen > logit_tolerance:
                raise VerificationError(
                    f"TFLite logits differ from Keras by {max_seen:.3g} "
                    f"(tolerance {logit_tolerance:g}); nothing written to {target}"
                )
            if not record["greedy"]["identical"]:
                bad = next(
                    i
                    for i, (a, b) in enumerate(zip(keras_text, litert_text, strict=True))
                    if a != b
                )
                raise VerificationError(
                    f"TFLite greedy text differs from Keras for prompt {prompts[bad]!r}: "
                    f"keras={keras_text[bad][:50]!r} litert={litert_text[bad][:50]!r}; "
                    f"nothing written to {target}"
                )
        else:
            record["tolerance"] = {"perplexity_increase": ppl_tolerance}
            if max_abs_diff is not None and max_seen > max_abs_diff:
                raise VerificationError(
                    f"TFLite ({quantize}) logits differ from Keras by {max_seen:.3g} "
                    f"(--max_abs_diff {max_abs_diff:g}); nothing written to {target}"
                )
        if record["perplexity_increase"] > ppl_tolerance:
            raise VerificationError(
                f"TFLite ({quantize}) perplexity {record['perplexity']:.3f} vs Keras "
                f"{record['keras_perplexity']:.3f}: +{record['perplexity_increase']:.2%} "
                f"exceeds the allowed +{ppl_tolerance:.2%}; nothing written to {target}"
            )
        return record

    extra = tokenizer_files(tokenizer)  # SentencePiece's tokenizer.model, or the BPE's files
    return litert.write_verified_tflite(
        target, blob, verify, quantize=quantize, extra_files=extra, notes=notes
    )


def _signature_details(interp) -> dict[str, Any]:
    """Names, shapes and dtypes of every signature's inputs and outputs."""
    details = {}
    for name in sorted(interp.get_signature_list()):
        runner = interp.get_signature_runner(name)
        details[name] = {
            kind: {
                k: {"shape": [int(d) for d in v["shape"]], "dtype": np.dtype(v["dtype"]).name}
                for k, v in sorted(getter().items())
            }
            for kind, getter in (
                ("inputs", runner.get_input_details),
                ("outputs", runner.get_output_details),
            )
        }
    return details


def litert_perplexity(
    trained, ids: np.ndarray, quantize: str, max_windows: int = 0
) -> dict[str, Any]:
    """Loss and perplexity of `W/export/tflite_<quantize>` on the windows `tfllm-evaluate` uses."""
    import os

    path = litert.tflite_path(trained.workdir, quantize)
    if not os.path.isfile(path):
        raise WorkdirError(
            f"{path}: no TFLite export (run tfllm-export --format=tflite --quantize={quantize})"
        )
    lm = LiteRTLM(path)
    seq_len = int(trained.config.model.max_length)
    windows = eval_windows(ids, seq_len, max_windows or 10**9)
    nll = [_nll(lm.teacher_forced_logits(w[:-1]), w[1:]) for w in windows]
    loss = float(np.mean(np.concatenate(nll)))
    tokens = int(len(windows) * seq_len)
    return {"loss": loss, "perplexity": math.exp(min(loss, 50.0)), "tokens": tokens}
