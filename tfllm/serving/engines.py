"""The models behind `tfllm-serve`: a workdir's checkpoint (Keras) or its SavedModel.

Each engine runs one batch of `Job`s at a time for the batcher
(`tfllm.serving.batcher`) and sends every job its events:

- language models: `{"text": delta, "tokens": [...]}` while decoding (the
  Keras engine streams a chunk of steps at a time; the SavedModel engine runs
  its `generate` signature, so its only delta is the whole completion), then
  `{"done": True, "completion", "finish_reason", "num_tokens", "prompt_tokens"}`;
- classifiers: one `{"done": True, "predictions": [{"label", "class_id",
  "probabilities"}, ...]}` per job (TF Serving's row format of the exported
  classifier's outputs).

The Keras LM engine decodes with `tfllm.inference.row_decode` (left-padded
rows, each with its own sampler, seed and budget), so a request's text equals
`tfllm-generate`'s with the same settings and seed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import tensorflow as tf

from tfllm.config import LM_NAMES, SAMPLERS, load_workdir_config
from tfllm.data.tokenizer_kinds import AnyTokenizer, load_tokenizer
from tfllm.errors import ConfigError, WorkdirError
from tfllm.export.verified import load_serving
from tfllm.inference.loading import load_trained
from tfllm.inference.row_decode import RowDecoder, RowSettings
from tfllm.serving.batcher import Job
from tfllm.serving.classifier_engines import load_classifier_engine
from tfllm.serving.protocol import GenerationSettings

BACKENDS = ("keras", "saved_model")


@dataclass
class Generation:
    """An LM job's payload: the prompt, its ids (already checked to fit) and settings."""

    prompt: str
    prompt_ids: list[int]
    settings: GenerationSettings
    stream: bool = False


def batch_size_for(rows: int, max_rows: int) -> int:
    """Rows padded to a power of two (≤ max_rows): few shapes, so few XLA compiles."""
    size = 1
    while size < rows:
        size *= 2
    return min(size, max(max_rows, rows))


class TextStream:
    """A job's tokens so far and the text already sent, for streaming deltas.

    Each delta is the newly decoded text; a trailing U+FFFD (a byte-level
    token that ends inside a character) is held back until the character is
    complete. The final event carries the whole completion, decoded at once,
    which is what `tfllm-generate` prints.
    """

    def __init__(self, tokenizer: AnyTokenizer) -> None:
        self.tokenizer = tokenizer
        self.tokens: list[int] = []
        self.sent = ""

    def delta(self, new: Sequence[int]) -> str:
        self.tokens.extend(int(t) for t in new)
        text = self.tokenizer.decode(self.tokens).rstrip("\ufffd")
        if not text.startswith(self.sent):
            return ""  # decoding is not prefix-stable here: the final event has the text
        delta, self.sent = text[len(self.sent) :], text
        return delta


class KerasLM:
    """A workdir's LM checkpoint, decoding batches in streamed chunks."""

    kind = "lm"
    backend = "keras"

    def __init__(self, workdir: str, max_rows: int, chunk: int, default_max_new: int) -> None:

        trained = load_trained(workdir)
        self.model, self.tokenizer = trained.model, trained.tokenizer
        self.config = trained.config
        self.max_length = int(self.model.max_length)
        self.eos = int(self.tokenizer.eos_id)
        self.max_rows = max_rows
        self.default_max_new = default_max_new
        self.decoder = RowDecoder(self.model, self.eos, chunk=chunk)
        self.checkpoint = trained.checkpoint
        self.cancelled = 0  # rows whose client left mid-decode

    def prompt_ids(self, prompt: str) -> list[int]:
        """As `tfllm-generate`: an empty prompt starts a new document at eos."""
        return self.tokenizer.encode(prompt) or [self.eos]

    def warm_up(self, prompt_tokens: int = 16) -> None:
        """Compiles the decode for every batch size before the first request."""
        size = 1
        while True:
            rows = [[self.eos] * prompt_tokens] * size
            settings = GenerationSettings(max_new_tokens=self.default_max_new)
            for _ in self.decoder.stream(rows, _row_settings([settings] * size)):
                pass
            if size >= self.max_rows:
                return
            size = min(size * 2, self.max_rows)

    def run_batch(self, jobs: list[Job]) -> None:
        gens: list[Generation] = [j.payload for j in jobs]
        filler = Generation("", [self.eos], GenerationSettings(max_new_tokens=1))
        rows = gens + [filler] * (batch_size_for(len(gens), self.max_rows) - len(gens))
        streams = [TextStream(self.tokenizer) for _ in jobs]
        finish: list[str | None] = [None] * len(jobs)
        chunks = self.decoder.stream([g.prompt_ids for g in rows], _row_settings(rows))
        try:
            for chunk in chunks:
                for i, job in enumerate(jobs):
                    if finish[i] is None:
                        finish[i] = self._take(job, gens[i], streams[i], chunk[i])
                if all(f is not None for f in finish):
                    break  # every client finished or left: stop decoding the batch
        finally:
            chunks.close()
        for i, job in enumerate(jobs):
            if finish[i] == "cancelled":
                self.cancelled += 1
            else:
                _finish(job, gens[i], streams[i], finish[i] or "length")

    def _take(self, job: Job, gen: Generation, stream: TextStream, tokens) -> str | None:
        """Adds a chunk's tokens to one job; returns its finish reason once it has one."""
        if job.cancelled.is_set():
            return "cancelled"
        room = gen.settings.max_new_tokens - len(stream.tokens)
        new, reason = [], None
        for token in tokens[:room].tolist():
            if token == self.eos:
                reason = "eos"
                break
            new.append(token)
        if reason is None and len(stream.tokens) + len(new) >= gen.settings.max_new_tokens:
            reason = "length"
        delta = stream.delta(new)
        if gen.stream and (new or delta):
            job.emit({"text": delta, "tokens": new})
        return reason


def _row_settings(rows: Sequence[Generation | GenerationSettings]):
    s = [r.settings if isinstance(r, Generation) else r for r in rows]
    return RowSettings.from_numpy(
        [SAMPLERS.index(x.sampler) for x in s],
        [x.temperature for x in s],
        [x.top_k for x in s],
        [x.top_p for x in s],
        [x.seed for x in s],
        [x.max_new_tokens for x in s],
    )


def _finish(job: Job, gen: Generation, stream: TextStream, reason: str) -> None:
    text = stream.tokenizer.decode(stream.tokens)
    if gen.stream and text.startswith(stream.sent) and text != stream.sent:
        job.emit({"text": text[len(stream.sent) :], "tokens": []})
    job.emit(
        {
            "done": True,
            "completion": text,
            "finish_reason": reason,
            "num_tokens": len(stream.tokens),
            "prompt_tokens": len(gen.prompt_ids),
        }
    )


class SavedModelLM:
    """`W/export/saved_model`'s per-row `generate` signature (no token streaming)."""

    kind = "lm"
    backend = "saved_model"

    def __init__(self, workdir: str, max_rows: int, default_max_new: int) -> None:
        path = os.path.join(workdir, "export", "saved_model")
        loaded = load_serving(path)
        if "generate" not in loaded.signatures:
            raise WorkdirError(
                f"{path}: exported before the per-row 'generate' signature existed; "
                f"re-export it (tfllm-export --workdir={workdir})"
            )
        self.signature = loaded.signatures["generate"]
        self._loaded = loaded  # keeps the signature's resources alive
        self.config = load_workdir_config(workdir)
        self.tokenizer = load_tokenizer(os.path.join(workdir, "tokenizer"))
        self.max_length = int(self.config.model.max_length)
        self.eos = int(self.tokenizer.eos_id)
        self.max_rows = max_rows
        self.default_max_new = default_max_new
        self.checkpoint = path

    def prompt_ids(self, prompt: str) -> list[int]:
        return self.tokenizer.encode(prompt) or [self.eos]

    def warm_up(self, prompt_tokens: int = 16) -> None:
        self._call(["x " * prompt_tokens], [GenerationSettings(max_new_tokens=2)])

    def _call(self, prompts: list[str], settings: list[GenerationSettings]):
        return self.signature(
            prompts=tf.constant(prompts, tf.string),
            max_new_tokens=tf.constant([s.max_new_tokens for s in settings], tf.int32),
            sampler=tf.constant([s.sampler for s in settings], tf.string),
            temperature=tf.constant([s.temperature for s in settings], tf.float32),
            top_k=tf.constant([s.top_k for s in settings], tf.int32),
            top_p=tf.constant([s.top_p for s in settings], tf.float32),
            seed=tf.constant([s.seed for s in settings], tf.int32),
        )

    def run_batch(self, jobs: list[Job]) -> None:
        gens: list[Generation] = [j.payload for j in jobs]
        # The signature tokenizes in the graph: it gets the prompts as sent.
        out = self._call([g.prompt for g in gens], [g.settings for g in gens])
        texts = [t.decode("utf-8", errors="replace") for t in out["completions"].numpy()]
        for job, gen, text, count in zip(jobs, gens, texts, out["num_tokens"].numpy(), strict=True):
            if gen.stream and text:
                job.emit({"text": text, "tokens": []})
            job.emit(
                {
                    "done": True,
                    "completion": text,
                    "finish_reason": "length" if count >= gen.settings.max_new_tokens else "eos",
                    "num_tokens": int(count),
                    "prompt_tokens": len(gen.prompt_ids),
                }
            )


def load_engine(workdir: str, backend: str, *, max_rows: int, chunk: int, default_max_new: int):
    """The engine for `workdir`'s model: an LM or a classifier, on `backend`."""
    if backend not in BACKENDS:
        raise ConfigError(f"--backend: must be one of {', '.join(BACKENDS)}, got {backend!r}")
    if not os.path.isdir(workdir):
        raise WorkdirError(f"--workdir: no such directory: {workdir}")
    config = load_workdir_config(workdir)
    if config.model.name in LM_NAMES:
        if backend == "keras":
            return KerasLM(workdir, max_rows, chunk, default_max_new)
        return SavedModelLM(workdir, max_rows, default_max_new)
    return load_classifier_engine(workdir, backend, config)
