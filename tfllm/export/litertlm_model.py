"""The `.tflite` inside a `.litertlm`: LiteRT-LM's signature contract, quantization, packing.

LiteRT-LM 0.18.1 finds a decoder's tensors by name (DESIGN §2, read from its
sources and checked by loading): signatures `prefill_<n>` and `decode`;
inputs `tokens` int32 `[1, n]` and `input_pos` int32 `[n]`; per layer
`kv_cache_k_<i>` / `kv_cache_v_<i>` `[1, heads, T, head_dim]`, inputs *and*
outputs of the same name (the engine binds one buffer to both, so the cache
stays inside the runtime: no copy per step, which is what made tfllm's own
Python loop slow); `decode` also outputs `logits` `[1, 1, V]`. Without a
mask input the engine reads the context length from dim 2 of
`kv_cache_k_0`, hence the heads-major layout — exactly `init_cache`'s.

The engine prefills every prompt token but the last in chunks of the
buckets that fit the space left, each starting wherever the previous one
ended, so `prefill_<n>` takes the caches and starts at `input_pos[0]`; it
pads a short chunk, and the padded slots it writes are overwritten by the
decode step at that position before anything attends to them (causal
attention reads only slots <= its own position). A small bucket is always
shipped: the engine drops buckets larger than the context left, and a
second turn near the end of the context needs one.

Both signatures call the model's own `call_with_cache` (GPT and Llama
alike), tracked by a `keras.export.ExportArchive` and converted by the
TFLite converter the way `tfllm.export.lm_tflite` does (DESIGN §2).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from tfllm.errors import TfllmError
from tfllm.export import litert
from tfllm.export.block_grid import GRID_SCOPE, OFFSET_SCOPE, exported_on_grids

LITERTLM_QUANTIZE = ("none", "dynamic", "int8", "int4")
SMALL_BUCKET = 8
DEFAULT_BUCKETS = (8, 32, 128)
INT4_BLOCK = 32  # LiteRT's blockwise int4 (ai-edge-quantizer's BLOCKWISE_32)


def litertlm_buckets(max_length: int, requested: tuple[int, ...] | list[int] = ()) -> list[int]:
    """Prefill chunk widths below the context: the small bucket, the defaults and the
    config's `export.prefill_buckets`, each < max_length (a prefill covers at most
    the context minus the token the first decode step takes)."""
    widths = {SMALL_BUCKET, *DEFAULT_BUCKETS, *(int(b) for b in requested)}
    return sorted(w for w in widths if 0 < w < max_length)


def kv_names(num_layers: int) -> list[tuple[str, str]]:
    return [(f"kv_cache_k_{i}", f"kv_cache_v_{i}") for i in range(num_layers)]


def build_litertlm_archive(model: keras.Model, buckets: list[int]) -> keras.export.ExportArchive:
    """`prefill_<n>` for each bucket and `decode`, under LiteRT-LM's names."""
    archive = keras.export.ExportArchive()
    archive.track(model)
    names = kv_names(model.num_layers)
    key, _ = model.init_cache(1)[0]
    shape = [int(d) for d in key.shape]
    specs = [tf.TensorSpec(shape, tf.float32, name=n) for pair in names for n in pair]

    def run(tokens, input_pos, caches):
        dtype = model.compute_dtype
        cache = tuple(
            (tf.cast(caches[2 * i], dtype), tf.cast(caches[2 * i + 1], dtype))
            for i in range(model.num_layers)
        )
        logits, cache = model.call_with_cache(tokens, cache, input_pos[0])
        out = {}
        for (k_name, v_name), (k, v) in zip(names, cache, strict=True):
            out[k_name], out[v_name] = tf.cast(k, tf.float32), tf.cast(v, tf.float32)
        return logits, out

    def prefill(tokens, input_pos, *caches):
        return run(tokens, input_pos, caches)[1]  # no logits: the converter drops the head

    def decode(tokens, input_pos, *caches):
        logits, out = run(tokens, input_pos, caches)
        return {"logits": tf.cast(logits, tf.float32), **out}

    for width in buckets:
        archive.add_endpoint(
            f"prefill_{width}",
            prefill,
            input_signature=[
                tf.TensorSpec([1, width], tf.int32, name="tokens"),
                tf.TensorSpec([width], tf.int32, name="input_pos"),
                *specs,
            ],
        )
    archive.add_endpoint(
        "decode",
        decode,
        input_signature=[
            tf.TensorSpec([1, 1], tf.int32, name="tokens"),
            tf.TensorSpec([1], tf.int32, name="input_pos"),
            *specs,
        ],
    )
    return archive


def convert_litertlm(model: keras.Model, buckets: list[int], quantize: str) -> tuple[bytes, dict]:
    """The contract `.tflite` for `quantize`, and notes on how it was quantized.

    - `none`: float32.
    - `dynamic`: the TFLite converter's dynamic-range int8 (weights int8 per
      channel, activations quantized on the fly; what `--format=tflite` does).
    - `int8` / `int4`: integer weights by LiteRT's quantizer (`litert-quantizer`,
      formerly ai-edge-quantizer) on the float file, kernels run with
      dynamically quantized activations (its `dynamic_wi*` recipes, the ones
      LiteRT-LM's own models ship with); the token table int8 in blocks of 32
      (`tfllm.export.block_grid`: the quantizer leaves GATHER tables float).
      int8: every weight int8 per channel. int4: each kernel split into LiteRT's
      symmetric int4 blocks of 32 plus float per-block offsets
      (`block_grid.affine_int4`: a GGUF Q4_1 kernel keeps its own levels), the
      LM head int8 per channel.
    """
    if quantize not in LITERTLM_QUANTIZE:
        choices = ", ".join(LITERTLM_QUANTIZE)
        raise TfllmError(f"--quantize: --format=litertlm takes {choices}, got {quantize!r}")
    signatures = ["decode", *(f"prefill_{w}" for w in buckets)]
    grids = (
        exported_on_grids(model, int4=quantize == "int4")
        if quantize in ("int8", "int4")
        else contextlib.nullcontext({})
    )
    with tempfile.TemporaryDirectory() as scratch, grids as grid_notes:
        build_litertlm_archive(model, buckets).write_out(scratch, verbose=False)
        mode = "dynamic" if quantize == "dynamic" else "none"
        blob, notes = litert.convert(scratch, signatures, mode, fuse_mul_into_fc=quantize != "int4")
    if quantize in ("int8", "int4"):
        blob, notes = quantize_weights(blob, 8 if quantize == "int8" else 4)
        notes.update(grid_notes)
    return blob, notes


def quantize_weights(float_blob: bytes, bits: int) -> tuple[bytes, dict[str, Any]]:
    """Integer weights for every supported op of a float `.tflite` (LiteRT's quantizer).

    int8: every weight int8 per output channel. int4: the kernels
    `exported_on_grids` split (`affine_int4` scope) int4 in blocks of 32 with
    the scale read back off the grid (LiteRT's dequantized-weight recovery,
    so nothing is rounded twice), their offset matmuls float, anything else
    (the LM head) int8 per channel.
    """
    try:
        from litert_quantizer import algorithm_manager, qtyping, quantizer  # `litertlm` extra
    except ImportError:
        raise TfllmError(
            f"--quantize=int{bits}: needs LiteRT's quantizer (pip install litert-quantizer)"
        ) from None
    ops = qtyping.TFLOperationName
    q = quantizer.Quantizer(bytearray(float_blob))
    q.add_dynamic_config(
        regex=".*",
        operation_name=ops.ALL_SUPPORTED,
        num_bits=8,
        granularity=qtyping.QuantGranularity.CHANNELWISE,
    )
    if bits == 4:
        q.add_dynamic_config(
            regex=f"/{GRID_SCOPE}/",
            operation_name=ops.FULLY_CONNECTED,
            num_bits=4,
            granularity=getattr(qtyping.QuantGranularity, f"BLOCKWISE_{INT4_BLOCK}"),
            algorithm_key=algorithm_manager.AlgorithmName.DEQUANTIZED_WEIGHT_RECOVERY,
        )
        q.update_quantization_recipe(
            regex=f"/{OFFSET_SCOPE}/",
            operation_name=ops.ALL_SUPPORTED,
            algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE,
        )
    result = q.quantize(enable_progress_bar=False, enable_progress_report=False)
    blob, shared = share_identical_buffers(bytes(result.quantized_model))
    notes: dict[str, Any] = {
        "quantizer": "litert-quantizer",
        "weight_bits": bits,
        "granularity": f"BLOCKWISE_{INT4_BLOCK}" if bits == 4 else "CHANNELWISE",
        "activations": "float32, quantized on the fly by the kernels (dynamic)",
        "duplicate_buffer_bytes_removed": shared,
    }
    if bits == 4:
        notes["other_weights"] = "int8 CHANNELWISE (the LM head; kernels off the block grid)"
        notes["block_offsets"] = "float32"
    return blob, notes


def share_identical_buffers(blob: bytes) -> tuple[bytes, int]:
    """Points tensors with byte-identical constant data at one buffer.

    Why: the converter and the quantizer give every signature (and every
    consumer) of a shared constant its own buffer: a token table read by
    GATHER in each signature came out once per signature — the int8 file of a
    tiny GPT was larger than its float one. Returns (flatbuffer, bytes saved).
    """
    import hashlib

    from ai_edge_litert.tools import flatbuffer_utils  # LiteRT's flatbuffer object API

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(blob))
    first: dict[bytes, int] = {}
    remap: dict[int, int] = {}
    for index, buffer in enumerate(model.buffers):
        data = buffer.data
        if data is None or len(data) < 1024:
            continue
        key = hashlib.sha256(np.asarray(data, np.uint8).tobytes()).digest()
        remap_to = first.setdefault(key, index)
        if remap_to != index:
            remap[index] = remap_to
    if not remap:
        return blob, 0
    saved = sum(len(model.buffers[i].data) for i in remap)
    for subgraph in model.subgraphs:
        for tensor in subgraph.tensors:
            tensor.buffer = remap.get(tensor.buffer, tensor.buffer)
    for index in remap:
        model.buffers[index].data = None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model)), saved


class ContractLM:
    """The contract `.tflite` in LiteRT's interpreter: teacher-forced logits for the
    verification's logit deltas and perplexity (the engine itself returns text)."""

    def __init__(self, model: str | bytes, num_threads: int | None = None) -> None:
        self.interpreter = litert.interpreter(model, num_threads)
        self._decode = self.interpreter.get_signature_runner("decode")
        inputs = self._decode.get_input_details()
        self.names = [n for n in inputs if n.startswith("kv_cache_")]
        self.cache_shape = tuple(int(d) for d in inputs["kv_cache_k_0"]["shape"])
        self.max_length = self.cache_shape[2]

    def signatures(self) -> dict[str, dict[str, dict[str, list[int]]]]:
        """Each signature's input and output shapes (recorded in verification.json)."""
        out = {}
        for name in sorted(self.interpreter.get_signature_list()):
            runner = self.interpreter.get_signature_runner(name)
            out[name] = {
                kind: {k: [int(d) for d in v["shape"]] for k, v in sorted(getter().items())}
                for kind, getter in (
                    ("inputs", runner.get_input_details),
                    ("outputs", runner.get_output_details),
                )
            }
        return out

    def teacher_forced_logits(self, ids: np.ndarray) -> np.ndarray:
        """Logits [len(ids), V]: every position through `decode`, one token at a time."""
        caches = {n: np.zeros(self.cache_shape, np.float32) for n in self.names}
        rows = []
        for position, token in enumerate(np.asarray(ids, np.int32).reshape(-1)):
            out = self._decode(
                tokens=np.array([[token]], np.int32),
                input_pos=np.array([position], np.int32),
                **caches,
            )
            caches = {n: out[n] for n in self.names}
            rows.append(out["logits"][0, 0])
        return np.stack(rows)


def llm_metadata(
    *,
    stop_ids: list[int],
    max_length: int,
    start_id: int | None = None,
    chat_template: str | None = None,
) -> bytes:
    """LiteRT-LM's `LlmMetadata` proto: stop tokens, optional start token, context
    size, greedy by default (top-k 1; its CPU sampler has no GREEDY type), and
    the Jinja chat template of an instruct model (empty templates otherwise:
    raw continuation, as tfllm's own models are trained)."""
    from litert_lm_builder.runtime.proto import llm_metadata_pb2  # optional (the extra)

    meta = llm_metadata_pb2.LlmMetadata()
    for stop in stop_ids:
        meta.stop_tokens.add().token_ids.ids.append(int(stop))
    if start_id is not None:
        meta.start_token.token_ids.ids.append(int(start_id))
    meta.max_num_tokens = int(max_length)
    meta.llm_model_type.generic_model.SetInParent()
    meta.sampler_params.type = meta.sampler_params.TOP_P
    meta.sampler_params.k = 1
    meta.sampler_params.p = 1.0
    meta.sampler_params.temperature = 1.0
    if chat_template:
        meta.jinja_prompt_template = chat_template
    return meta.SerializeToString()


def pack_litertlm(
    out_path: str,
    tflite_path: str,
    metadata: bytes,
    *,
    sentencepiece_model: str | None = None,
    hf_tokenizer_json: str | None = None,
) -> None:
    """Bundles model, tokenizer and metadata with `litert_lm_builder` (float32
    activations preferred: the engine's CPU default for decoders is fp16)."""
    import litert_lm_builder as builder  # optional (the `litertlm` extra)

    meta_path = out_path + ".meta.pb"
    with open(meta_path, "wb") as f:
        f.write(metadata)
    try:
        bundle = builder.LitertLmFileBuilder()
        bundle.add_system_metadata(
            builder.Metadata(key="Authors", value="tfllm", dtype=builder.DType.STRING)
        )
        with contextlib.redirect_stdout(io.StringIO()):  # it prints the activation type
            bundle.add_tflite_model(
                tflite_path,
                builder.TfLiteModelType.PREFILL_DECODE,
                prefer_activation_type="float32",
            )
        if sentencepiece_model:
            bundle.add_sentencepiece_tokenizer(sentencepiece_model)
        elif hf_tokenizer_json:
            bundle.add_hf_tokenizer(hf_tokenizer_json)
        else:
            raise TfllmError(f"{out_path}: no tokenizer to bundle")
        bundle.add_llm_metadata(meta_path)
        with open(out_path, "wb") as f:
            bundle.build(f)
    finally:
        os.remove(meta_path)
