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

import tensorflow as tf

from tfllm.config import LM_NAMES, load_workdir_config
from tfllm.data.tokenizer_kinds import load_tokenizer
from tfllm.errors import ConfigError, WorkdirError
from tfllm.export.verified import load_serving
from tfllm.inference.generate import CACHE_BUCKET
from tfllm.inference.loading import load_trained
from tfllm.inference.row_decode import RowDecoder
from tfllm.serving.batcher import Job
from tfllm.serving.classifier_engines import load_classifier_engine
from tfllm.serving.continuous import ContinuousBatcher, Generation
from tfllm.serving.protocol import GenerationSettings

BACKENDS = ("keras", "saved_model")


class KerasLM:
    """A workdir's LM checkpoint: continuous batching, streamed in chunks of steps."""

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
        self.batcher = ContinuousBatcher(self.decoder, self.tokenizer, max_rows)
        self.checkpoint = trained.checkpoint

    @property
    def cancelled(self) -> int:
        return self.batcher.cancelled

    @property
    def joined(self) -> int:
        return self.batcher.joined

    def prompt_ids(self, prompt: str) -> list[int]:
        """As `tfllm-generate`: an empty prompt starts a new document at eos."""
        return self.tokenizer.encode(prompt) or [self.eos]

    def warm_up(self, prompt_tokens: int = 16) -> None:
        """Compiles the decode for every batch width and the cache lengths up to
        what a batch of requests with `prompt_tokens`-token prompts and the
        default budget gets; longer ones compile on first use
        (`RowDecoder.compile`)."""
        probe = Generation("", [self.eos] * prompt_tokens, GenerationSettings(self.default_max_new))
        rows = 1
        while True:
            length = CACHE_BUCKET
            while length <= self.batcher.length_for([probe]):
                self.decoder.compile(rows, length)
                length *= 2
            if rows >= self.max_rows:
                return
            rows = min(2 * rows, self.max_rows)

    def run_batch(self, jobs: list[Job], more=lambda n: []) -> None:
        self.batcher.run(jobs, more)


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

    def run_batch(self, jobs: list[Job], more=None) -> None:
        """One call of the `generate` signature (a graph: no joining mid-way)."""
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
