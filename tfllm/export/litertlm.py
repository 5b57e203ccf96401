"""Language model → `.litertlm` for Google's LiteRT-LM engine, verified in that engine.

`W/export/litertlm_<quantize>/model.litertlm` holds the contract `.tflite`
(`tfllm.export.litertlm_model`), the tokenizer (SentencePiece's `.model`
for tfllm's own models, Hugging Face's `tokenizer.json` for imported
byte-level BPE ones) and `LlmMetadata` (stop tokens, context size, the chat
template of an instruct model). It is built in a temp dir and, before it
is renamed into place with its `verification.json`:

- the `.tflite` runs in LiteRT's interpreter, teacher-forced on eval
  windows, against the Keras model: max |Δ logit| and both perplexities
  (the engine itself returns only text);
- the bundle is loaded by `litert_lm.Engine` (CPU, a private cache dir)
  and greedy-decodes the verification prompts — the config's, one longer
  than the largest prefill bucket (so the engine chunks it), and a two-turn
  continuation in one session — against Keras greedy (`Generator`).

Float: logits within `FLOAT_LOGIT_TOLERANCE` and identical text on every
prompt, else `VerificationError` naming the prompt and the first differing
token. Quantized: the text is recorded, the perplexity increase must stay
within `PERPLEXITY_TOLERANCE[quantize]`. A failure leaves nothing behind.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any

import numpy as np

from tfllm.data.tokenizer import Tokenizer
from tfllm.data.tokenizer_kinds import chat_template
from tfllm.export.litert import versions
from tfllm.export.litertlm_model import (
    ContractLM,
    convert_litertlm,
    litertlm_buckets,
    llm_metadata,
    pack_litertlm,
)
from tfllm.export.lm_tflite import compare_windows, eval_windows
from tfllm.export.verified import VerificationError
from tfllm.inference.generate import Generator
from tfllm.inference.litertlm_runner import LITERTLM_FILE, LiteRTLMEngine, import_litert_lm
from tfllm.utils.io import atomic_directory, atomic_write_json

FLOAT_LOGIT_TOLERANCE = 1e-3
PERPLEXITY_TOLERANCE = {"none": 0.001, "dynamic": 0.05, "int8": 0.05, "int4": 0.10}
DEFAULT_VERIFY_WINDOWS = 2
# Teacher forcing runs one decode step per token; a 2,048-token window of an
# imported model would take minutes, and 256 tokens already cover every
# cache slot the prompts below use.
VERIFY_WINDOW_TOKENS = 256


def _bundle(trained, scratch: str, blob: bytes, out_path: str) -> dict[str, Any]:
    """Packs `blob` with the tokenizer and metadata; returns what went in."""
    tokenizer, model = trained.tokenizer, trained.model
    tflite = os.path.join(scratch, "model.tflite")
    with open(tflite, "wb") as f:
        f.write(blob)
    if isinstance(tokenizer, Tokenizer):
        tokenizer_file = os.path.join(scratch, "tokenizer.model")
        with open(tokenizer_file, "wb") as f:
            f.write(tokenizer.model_proto)
        kind = {"sentencepiece_model": tokenizer_file}
    else:  # imported byte-level BPE: Hugging Face's tokenizer.json, which the engine reads
        tokenizer.save_hf(scratch)
        kind = {"hf_tokenizer_json": os.path.join(scratch, "tokenizer.json")}
    workdir_tokenizer = os.path.join(trained.workdir, "tokenizer") if trained.workdir else None
    template = chat_template(workdir_tokenizer) if workdir_tokenizer else None
    if template:
        template = engine_chat_template(template)
    # No start token: tfllm's tokenizers never prepend one (nor does SmolLM2's template).
    meta = llm_metadata(
        stop_ids=[tokenizer.eos_id], max_length=int(model.max_length), chat_template=template
    )
    pack_litertlm(out_path, tflite, meta, **kind)
    return {
        "tokenizer": "sentencepiece" if "sentencepiece_model" in kind else "hf_tokenizer_json",
        "stop_tokens": [int(tokenizer.eos_id)],
        "start_token": None,
        "chat_template": template is not None,
        "tflite_bytes": len(blob),
    }


# LiteRT-LM's Conversation API passes each message's content as a list of parts
# ([{"type": "text", "text": ...}]); Hugging Face templates concatenate it as a
# string, which its renderer rejects ("tried to use + operator on unsupported
# types string and sequence", SmolLM2). Either form renders the text.
_CONTENT_TEXT = (
    "(message['content'] if message['content'] is string "
    "else message['content'] | map(attribute='text') | join(''))"
)


def engine_chat_template(template: str) -> str:
    """The Hugging Face chat template, made to accept LiteRT-LM's list-of-parts content."""
    return template.replace("message['content']", _CONTENT_TEXT).replace(
        'message["content"]', _CONTENT_TEXT
    )


def verification_prompts(
    trained, eval_ids: np.ndarray, buckets: list[int], max_new: int
) -> tuple[list[tuple[str, int]], list[str], int]:
    """(prompt, new tokens) pairs for single turns, the two turns, and their length each.

    The config's non-empty prompts (the engine needs at least one token; an
    empty prompt means "start after eos" only to tfllm's loop), plus one eval
    passage longer than the largest bucket, each sized to fit the context.
    """
    tokenizer, max_length = trained.tokenizer, int(trained.model.max_length)
    ids = np.asarray(eval_ids, np.int32).reshape(-1)
    long_ids = ids[: buckets[-1] + 4].tolist()
    long_prompt = tokenizer.decode(long_ids)
    singles = [(p, max_new) for p in trained.config.export.verify_prompts if p]
    room = max_length - len(tokenizer.encode(long_prompt)) - 1
    if room >= 1:
        singles.append((long_prompt, min(max_new, room)))
    first = singles[0][0] if singles else tokenizer.decode(ids[:4].tolist())
    second = tokenizer.decode(ids[len(long_ids) : len(long_ids) + 3].tolist())
    used = len(tokenizer.encode(first)) + len(tokenizer.encode(second))
    per_turn = max(1, min(max_new, (max_length - used - 1) // 2))
    return singles, [first, second], per_turn


def keras_turns(trained, prompts: list[str], max_new: int) -> list[list[int]]:
    """Keras greedy ids per turn, each turn continuing prompt + answer of the ones before
    (what one engine session holds), cut at eos. A turn that stopped at eos keeps the
    eos in the context: the engine does too (checked on SmolLM2: with it, turn 2's
    text equals the engine's; without it, it does not)."""
    tokenizer, generator = trained.tokenizer, Generator(trained.model)
    context: list[int] = []
    out = []
    for prompt in prompts:
        context += tokenizer.encode(prompt)
        new = generator.generate(context, max_new, eos_id=tokenizer.eos_id).tolist()
        if tokenizer.eos_id in new:
            new = new[: new.index(tokenizer.eos_id) + 1]
        context += new
        out.append([t for t in new if t != tokenizer.eos_id])
    return out


def first_difference(tokenizer, keras_ids: list[int], text: str) -> str:
    """Names the first Keras token the engine's text does not continue with."""
    for k in range(1, len(keras_ids) + 1):
        if not text.startswith(tokenizer.decode(keras_ids[:k])):
            piece = tokenizer.decode(keras_ids[k - 1 : k])
            return f"new token {k} (Keras id {keras_ids[k - 1]} {piece!r})"
    return f"after the {len(keras_ids)} Keras tokens (the engine went on)"


def engine_checks(
    trained, path: str, singles: list[tuple[str, int]], two_turn: list[str], per_turn: int
) -> dict[str, Any]:
    """Greedy text of the bundle in LiteRT-LM vs Keras, and the engine's decode speed."""
    tokenizer = trained.tokenizer
    rows = []
    with LiteRTLMEngine(path) as engine:
        cases = [([p], n) for p, n in singles] + [(two_turn, per_turn)]
        for prompts, n in cases:
            reference = keras_turns(trained, prompts, n)
            turns = engine.turns(prompts, n)
            for i, (ids, turn) in enumerate(zip(reference, turns, strict=True)):
                keras_text = tokenizer.decode(ids)
                rows.append(
                    {
                        "prompt": prompts[i],
                        "turn": i + 1,
                        "context_prompts": prompts[:i],
                        "max_new_tokens": n,
                        "keras": keras_text,
                        "litertlm": turn.text,
                        "identical": keras_text == turn.text,
                        "first_difference": None
                        if keras_text == turn.text
                        else first_difference(tokenizer, ids, turn.text),
                        "decode_tokens_per_second": _rate(turn),
                    }
                )
        load_seconds = engine.load_seconds
    rates = [r["decode_tokens_per_second"] for r in rows if r["decode_tokens_per_second"]]
    return {
        "greedy": rows,
        "greedy_identical": all(r["identical"] is not False for r in rows),
        "engine_load_seconds": round(load_seconds, 3),
        "engine_decode_tokens_per_second_median": float(np.median(rates)) if rates else None,
    }


def _rate(turn) -> float | None:
    """The engine's decode tokens/s for the turn (its benchmark counter)."""
    if turn.decode_tokens < 2 or not turn.decode_tokens_per_second:
        return None
    return round(turn.decode_tokens_per_second, 1)


def export_litertlm(
    trained,
    target: str,
    quantize: str,
    *,
    eval_ids: np.ndarray,
    verify_windows: int = DEFAULT_VERIFY_WINDOWS,
    max_abs_diff: float | None = None,
    max_perplexity_increase: float | None = None,
) -> dict[str, Any]:
    """Converts, bundles, verifies in LiteRT-LM and writes `target/model.litertlm`."""
    import_litert_lm()  # fail before minutes of conversion when the runtime is missing
    started = time.time()
    model, config = trained.model, trained.config
    max_length = int(model.max_length)
    buckets = litertlm_buckets(max_length, tuple(config.export.get("prefill_buckets", ())))
    window = min(max_length, VERIFY_WINDOW_TOKENS)
    windows = eval_windows(eval_ids, window, verify_windows)
    if len(windows) == 0:
        raise VerificationError(
            f"not enough eval tokens to verify with one window of {window + 1} tokens"
        )
    max_new = int(config.export.max_new_tokens)
    singles, two_turn, per_turn = verification_prompts(trained, eval_ids, buckets, max_new)
    blob, notes = convert_litertlm(model, buckets, quantize)
    logit_tolerance = FLOAT_LOGIT_TOLERANCE if max_abs_diff is None else max_abs_diff
    ppl_tolerance = (
        PERPLEXITY_TOLERANCE[quantize] if max_perplexity_increase is None
        else max_perplexity_increase
    )  # fmt: skip
    with atomic_directory(target) as tmp, tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(tmp, LITERTLM_FILE)
        bundle = _bundle(trained, scratch, blob, path)
        contract = ContractLM(blob)
        record: dict[str, Any] = {
            "format": "litertlm",
            "quantize": quantize,
            **notes,
            **bundle,
            "prefill_buckets": buckets,
            "signatures": contract.signatures(),
            **compare_windows(model, contract, windows),
        }
        record.update(engine_checks(trained, path, singles, two_turn, per_turn))
        _check(record, quantize, logit_tolerance, ppl_tolerance, max_abs_diff, target)
        record.update(
            file=LITERTLM_FILE,
            size_bytes=os.path.getsize(path),
            versions={
                **versions(),
                "litert_lm_api": _version("litert-lm-api"),
                "litert_lm_builder": _version("litert-lm-builder"),
            },  # fmt: skip
            seconds=round(time.time() - started, 2),
        )
        atomic_write_json(os.path.join(tmp, "verification.json"), record)
    return record


def _check(
    record: dict[str, Any],
    quantize: str,
    logit_tolerance: float,
    ppl_tolerance: float,
    max_abs_diff: float | None,
    target: str,
) -> None:
    """Raises `VerificationError` when the record breaks the mode's rule."""
    if quantize == "none":
        record["tolerance"] = {"max_abs_diff": logit_tolerance, "greedy": "identical"}
        if record["max_abs_diff"] > logit_tolerance:
            raise VerificationError(
                f"LiteRT-LM .tflite logits differ from Keras by {record['max_abs_diff']:.3g} "
                f"(tolerance {logit_tolerance:g}); nothing written to {target}"
            )
        bad = next((r for r in record["greedy"] if r["identical"] is False), None)
        if bad is not None:
            raise VerificationError(
                f"LiteRT-LM greedy text differs from Keras for prompt {bad['prompt'][:60]!r} "
                f"(turn {bad['turn']}) at {bad['first_difference']}: "
                f"keras={bad['keras'][:50]!r} litertlm={bad['litertlm'][:50]!r}; "
                f"nothing written to {target}"
            )
    else:
        record["tolerance"] = {"perplexity_increase": ppl_tolerance}
        if max_abs_diff is not None and record["max_abs_diff"] > max_abs_diff:
            raise VerificationError(
                f"LiteRT-LM ({quantize}) logits differ from Keras by "
                f"{record['max_abs_diff']:.3g} (--max_abs_diff {max_abs_diff:g}); "
                f"nothing written to {target}"
            )
    if record["perplexity_increase"] > ppl_tolerance:
        raise VerificationError(
            f"LiteRT-LM ({quantize}) perplexity {record['perplexity']:.3f} vs Keras "
            f"{record['keras_perplexity']:.3f}: +{record['perplexity_increase']:.2%} exceeds "
            f"the allowed +{ppl_tolerance:.2%}; nothing written to {target}"
        )


def _version(package: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return "not installed"
