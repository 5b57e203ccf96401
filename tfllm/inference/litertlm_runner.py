"""Running a `.litertlm` bundle in Google's LiteRT-LM engine, streaming text.

`tfllm-export --format=litertlm` writes `W/export/litertlm_<quantize>/model.litertlm`
(the `.tflite` under LiteRT-LM's signature contract, the tokenizer and the
`LlmMetadata`, see `tfllm.export.litertlm`). The engine tokenizes, prefills,
decodes and detokenizes itself (C++, the runtime that ships on Android, iOS
and desktop), so this module hands it text and gets text back, token by
token, through LiteRT-LM's streaming call.

Two things the engine does that shape this wrapper (LiteRT-LM 0.18.1):

- it writes an XNNPACK weight cache beside the model unless told where to
  put it; every `LiteRTLMEngine` gives it a private temp directory instead,
  removed on `close`, so nothing appears next to a verified export;
- its CPU samplers are top-p (with top-k) only: "greedy" is `top_k=1`,
  which picks the arg-max exactly as tfllm's greedy rule does. Its random
  samplers are its own, so a seed does not give tfllm's sampled text.
"""

from __future__ import annotations

import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from tfllm.errors import ConfigError, TfllmError
from tfllm.utils.native_stderr import filtered_native_stderr

LITERTLM_FILE = "model.litertlm"
PINNED_VERSION = "0.18.1"  # the engine finds tensors by names that change between releases
# The engine's load-time chatter (absl INFO/WARNING lines, registry notices);
# errors (E...) still reach stderr.
_CHATTER = re.compile(rb"^(?:[IW]\d{4} |INFO: |WARNING: |VERBOSE: )")


def litertlm_dir(workdir: str, quantize: str) -> str:
    """`W/export/litertlm_<quantize>`: where `tfllm-export --format=litertlm` writes."""
    return os.path.join(workdir, "export", f"litertlm_{quantize}")


def litertlm_path(workdir: str, quantize: str) -> str:
    return os.path.join(litertlm_dir(workdir, quantize), LITERTLM_FILE)


def import_litert_lm() -> Any:
    """The `litert_lm` module, or one line saying how to install the pinned version."""
    try:
        import litert_lm  # an optional runtime (the `litertlm` extra)
    except ImportError:
        raise ConfigError(
            "--format/--backend=litertlm: the LiteRT-LM runtime is not installed "
            f'(pip install "litert-lm-api=={PINNED_VERSION}" or pip install -e ".[litertlm]")'
        ) from None
    return litert_lm


@dataclass(frozen=True)
class EngineSampling:
    """A tfllm sampler in the engine's terms (its CPU sampler is top-k + top-p)."""

    sampler: str = "greedy"
    temperature: float = 1.0
    top_k: int = 40
    top_p: float = 0.9
    seed: int = 0

    # "Keep every token" for the engine's top-k stage (it rejects k <= 0).
    ALL_TOKENS = 1 << 20

    def config(self, litert_lm: Any) -> Any:
        if self.sampler == "greedy":
            return litert_lm.SamplerConfig(top_k=1, top_p=1.0, temperature=1.0, seed=self.seed)
        top_k = self.top_k if self.sampler == "top_k" else self.ALL_TOKENS
        top_p = self.top_p if self.sampler == "top_p" else 1.0
        return litert_lm.SamplerConfig(
            top_k=top_k, top_p=top_p, temperature=self.temperature, seed=self.seed
        )


@dataclass
class Turn:
    """One prefill + decode of a session: the text out and how fast it came."""

    text: str
    chunks: int
    first_chunk_seconds: float
    seconds: float
    prefill_tokens: int = 0
    decode_tokens: int = 0
    decode_tokens_per_second: float | None = None  # the engine's own benchmark counter


class LiteRTLMEngine:
    """A `.litertlm` loaded in LiteRT-LM (CPU backend), with a private cache dir."""

    def __init__(self, path: str, num_threads: int | None = None) -> None:
        if not os.path.isfile(path):
            raise TfllmError(f"{path}: no .litertlm file here (run tfllm-export --format=litertlm)")
        self.litert_lm = import_litert_lm()
        self.path = path
        self._cache = tempfile.TemporaryDirectory(prefix="tfllm-litertlm-cache-")
        backend = self.litert_lm.Backend.CPU(thread_count=num_threads or os.cpu_count() or 1)
        started = time.perf_counter()
        with filtered_native_stderr(_CHATTER):
            self.litert_lm.set_min_log_severity(self.litert_lm.LogSeverity.ERROR)
            try:
                self.engine = self.litert_lm.Engine(
                    path, backend=backend, cache_dir=self._cache.name, enable_benchmark=True
                )
            except RuntimeError as e:
                self._cache.cleanup()
                raise TfllmError(f"{path}: LiteRT-LM could not load it ({e})") from None
        self.load_seconds = time.perf_counter() - started

    def session(self, max_new_tokens: int, sampling: EngineSampling = EngineSampling()) -> Any:
        """A raw-continuation session (no prompt template) that stops after
        `max_new_tokens` per turn, at a stop token, or at the context's end."""
        return self.engine.create_session(
            apply_prompt_template=False,
            sampler_config=sampling.config(self.litert_lm),
            max_output_tokens=max_new_tokens,
        )

    def stream(self, session: Any, prompt: str) -> Iterator[str]:
        """Prefills `prompt` into `session` and yields the text of each new token
        as the engine produces it (LiteRT-LM's asynchronous decode)."""
        with filtered_native_stderr(_CHATTER):
            session.run_prefill([prompt])
        for response in session.run_decode_async():
            yield "".join(response.texts)

    def turns(
        self,
        prompts: Sequence[str],
        max_new_tokens: int,
        sampling: EngineSampling = EngineSampling(),
    ) -> list[Turn]:
        """Each prompt continues the same session (turn 2 sees turn 1 and its answer)."""
        session = self.session(max_new_tokens, sampling)
        try:
            out = []
            for prompt in prompts:
                started = time.perf_counter()
                pieces, first = [], 0.0
                for piece in self.stream(session, prompt):
                    if not pieces:
                        first = time.perf_counter() - started
                    pieces.append(piece)
                seconds = time.perf_counter() - started
                info = session.get_benchmark_info()
                out.append(
                    Turn(
                        "".join(pieces),
                        len(pieces),
                        first,
                        seconds,
                        info.last_prefill_token_count,
                        info.last_decode_token_count,
                        info.last_decode_tokens_per_second,
                    )
                )
            return out
        finally:
            session.close()

    def generate(
        self, prompt: str, max_new_tokens: int, sampling: EngineSampling = EngineSampling()
    ) -> str:
        return self.turns([prompt], max_new_tokens, sampling)[0].text

    def close(self) -> None:
        engine = getattr(self, "engine", None)
        if engine is not None:
            with filtered_native_stderr(_CHATTER):
                engine.close()
            self.engine = None
        self._cache.cleanup()

    def __enter__(self) -> LiteRTLMEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
