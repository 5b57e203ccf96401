"""Generating from a workdir: the library calls behind `tfllm-generate`.

`generate` continues one prompt with any backend: the checkpoint (Keras, KV
cache), the exported SavedModel, or the exported `.tflite` in LiteRT.
`generate_batch` continues many prompts with the checkpoint, batched and
sharded over a strategy's replicas, each with its own seed (`seed + index`),
results in input order. The same settings and seed give the same text on
every backend (the exporters verify it).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import keras
import tensorflow as tf

from tfllm.config import LM_NAMES, load_workdir_config
from tfllm.data.tokenizer_kinds import load_shipped_tokenizer
from tfllm.errors import ConfigError, WorkdirError
from tfllm.export.litert import tflite_path
from tfllm.export.verified import load_serving
from tfllm.inference.distributed import BatchGenerator
from tfllm.inference.generate import Generator, fit_prompt, generate_text
from tfllm.inference.lm_tflite_runner import LiteRTGenerator, LiteRTLM
from tfllm.inference.loading import TrainedModel, load_trained
from tfllm.inference.prompts import Prompt
from tfllm.inference.row_decode import RowDecoder, RowSettings
from tfllm.inference.sampling import SAMPLERS
from tfllm.inference.text_stream import TextStream

BACKENDS = ("keras", "saved_model", "litert")


@dataclass(frozen=True)
class Sampling:
    """How each new token is picked, and how many (the `tfllm-generate` flags)."""

    max_new_tokens: int = 64
    sampler: str = "greedy"
    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.9
    seed: int = 0


def generate(
    workdir: str,
    prompt: str,
    sampling: Sampling = Sampling(),
    *,
    backend: str = "keras",
    quantize: str = "none",
    num_samples: int = 1,
) -> list[str]:
    """`num_samples` continuations of `prompt` (seeds `seed`, `seed + 1`, ...)."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if backend == "saved_model":
        return _generate_saved_model(workdir, prompt, sampling, num_samples)
    if backend == "litert":
        generator, tokenizer = _litert_generator(workdir, quantize)
    else:
        keras.utils.set_random_seed(sampling.seed)  # before the tokenizer exists (DESIGN §2)
        trained = load_trained(workdir)
        _require_lm_model(trained, workdir)
        generator, tokenizer = Generator(trained.model), trained.tokenizer
    # The Keras and LiteRT backends share this loop and its sampling rule.
    return [
        generate_text(
            generator,
            tokenizer,
            [prompt],
            sampling.max_new_tokens,
            sampler=sampling.sampler,
            temperature=sampling.temperature,
            top_k=sampling.top_k,
            top_p=sampling.top_p,
            seed=sampling.seed + i,
        )[0]
        for i in range(num_samples)
    ]


def stream(
    workdir: str, prompt: str, sampling: Sampling = Sampling(), *, num_samples: int = 1
) -> Iterator[tuple[int, str]]:
    """`generate` on the checkpoint, handing out `(sample, text piece)` as the
    tokens are produced (chunks of 8 XLA-compiled steps; `RowDecoder`), for
    `tfllm-generate`'s streamed output. Each sample starts with an empty piece;
    the pieces of sample i add up to `generate(...)[i]` (the same fitting,
    sampling rule and seeds)."""
    keras.utils.set_random_seed(sampling.seed)  # before the tokenizer exists (DESIGN §2)
    trained = load_trained(workdir)
    _require_lm_model(trained, workdir)
    tokenizer, eos = trained.tokenizer, trained.tokenizer.eos_id
    decoder = RowDecoder(trained.model, eos, chunk=8)
    ids = tokenizer.encode(prompt) or [eos]
    fitted, max_new = fit_prompt(ids, sampling.max_new_tokens, trained.model.max_length)
    for i in range(num_samples):
        settings = RowSettings.from_numpy(
            [SAMPLERS.index(sampling.sampler)], [sampling.temperature], [sampling.top_k],
            [sampling.top_p], [sampling.seed + i], [max_new],
        )  # fmt: skip
        text = TextStream(tokenizer)
        yield i, ""
        for chunk in decoder.stream([fitted.tolist()], settings):
            new = chunk[0].tolist()
            if eos in new:
                new = new[: new.index(eos)]
            room = max_new - len(text.tokens)
            piece = text.delta(new[:room])
            if piece:
                yield i, piece
        last, _ = text.finish()
        if last:
            yield i, last


def _require_lm_model(trained: TrainedModel, workdir: str) -> None:
    if trained.config.model.name not in LM_NAMES:
        what = "classifies" if trained.is_classifier else "encodes"
        raise ConfigError(
            f"--workdir: {workdir} holds a {trained.config.model.name}, which {what} "
            "text rather than generating it (tfllm-generate needs gpt or llama)"
        )


def _litert_generator(workdir: str, quantize: str):
    """The LiteRT runner of `W/export/tflite_<quantize>` and the tokenizer shipped beside it."""
    _require_language_model(workdir)
    path = tflite_path(workdir, quantize)
    if not os.path.isfile(path):
        raise ConfigError(
            f"--backend=litert: {path} not found "
            f"(run tfllm-export --workdir={workdir} --format=tflite --quantize={quantize})"
        )
    # The tokenizer shipped beside the .tflite, so the file and its vocabulary travel together.
    tokenizer = load_shipped_tokenizer(os.path.dirname(path))
    return LiteRTGenerator(LiteRTLM(path)), tokenizer


def _generate_saved_model(
    workdir: str, prompt: str, sampling: Sampling, num_samples: int
) -> list[str]:
    loaded = load_serving(os.path.join(workdir, "export", "saved_model"))
    fn = getattr(loaded, f"generate_{sampling.sampler}")
    texts = []
    for i in range(num_samples):
        out = fn(
            tf.constant([prompt]),
            tf.constant(sampling.max_new_tokens),
            tf.constant(sampling.temperature, tf.float32),
            tf.constant(sampling.top_k),
            tf.constant(sampling.top_p, tf.float32),
            tf.constant(sampling.seed + i),
        )
        # A byte-level tokenizer's text may end inside a character: as `decode`, U+FFFD.
        texts.append(out["completions"].numpy()[0].decode("utf-8", errors="replace"))
    return texts


def _require_language_model(workdir: str) -> None:
    if not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir: no such directory: {workdir}")
    config = load_workdir_config(workdir)
    if config.model.name not in LM_NAMES:
        raise ConfigError(f"--workdir: {workdir} holds a {config.model.name}, not a language model")


@dataclass
class BatchRun:
    """`generate_batch`'s result: one row per prompt (`prompts.RESULT_FIELDS`)."""

    trained: TrainedModel
    rows: list[dict]
    seconds: float

    @property
    def tokens(self) -> int:
        return sum(r["tokens"] for r in self.rows)


def generate_batch(
    workdir: str,
    prompts: Sequence[Prompt],
    sampling: Sampling = Sampling(),
    *,
    strategy=None,
    batch_size: int = 8,
    on_batch: Callable[[int], None] | None = None,
) -> BatchRun:
    """Every prompt, batched (`batch_size` global) and sharded over `strategy`'s
    replicas; prompt i is sampled with seed `sampling.seed + i`."""
    _require_language_model(workdir)
    keras.utils.set_random_seed(sampling.seed)  # before the tokenizer exists (DESIGN §2)
    strategy = strategy or tf.distribute.get_strategy()
    trained = load_trained(workdir, strategy)
    tokenizer = trained.tokenizer
    generator = BatchGenerator(trained.model, strategy, batch_size)
    started = time.perf_counter()
    completions = generator.generate(
        [tokenizer.encode(p.text) or [tokenizer.eos_id] for p in prompts],
        sampling.max_new_tokens,
        sampler=sampling.sampler,
        temperature=sampling.temperature,
        top_k=sampling.top_k,
        top_p=sampling.top_p,
        seeds=[sampling.seed + p.index for p in prompts],
        eos_id=tokenizer.eos_id,
        on_batch=on_batch,
    )
    seconds = time.perf_counter() - started
    rows = [
        {
            "index": p.index,
            "line": p.line,
            "prompt": p.text,
            "completion": tokenizer.decode(c.ids),
            "prompt_tokens": len(c.prompt_ids),
            "tokens": len(c.ids),
            "finish": c.finish,
            "seed": sampling.seed + p.index,
        }
        for p, c in zip(prompts, completions, strict=True)
    ]
    return BatchRun(trained, rows, seconds)
