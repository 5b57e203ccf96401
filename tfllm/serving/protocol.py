"""What a request to `tfllm-serve` may say, checked before it reaches the model.

Every refusal is a `ClientError`: an HTTP status (4xx) and one line naming
the field and the problem, answered as `{"error": "..."}` (TF Serving's error
body), so a client sees what to fix and the server carries on. Generation
settings follow `tfllm-generate`'s flags and defaults, so a request and the
command line with the same settings and seed give the same text.

TF Serving's REST shapes (`:predict`): the row format `{"instances": [...]}`
answered with `{"predictions": [...]}`, or the columnar `{"inputs": ...}`
answered with `{"outputs": ...}`.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from tfllm.config import SAMPLERS
from tfllm.inference.workdir import Sampling

MAX_INSTANCES = 256  # rows in one :predict request
MAX_PROMPT_CHARS = 1_000_000


class ClientError(Exception):
    """A request the server refuses: `status` (4xx) and a one-line message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# One request's sampling settings: `tfllm-generate`'s flags and their defaults.
GenerationSettings = Sampling


def parse_json(body: bytes) -> Any:
    """The request body as JSON, or a 400 saying why not."""
    if not body:
        raise ClientError("the request body is empty (expected a JSON object)")
    try:
        return json.loads(body)
    except UnicodeDecodeError:
        raise ClientError("the request body is not UTF-8 JSON") from None
    except json.JSONDecodeError as e:
        raise ClientError(f"malformed JSON: {e.msg} at line {e.lineno} column {e.colno}") from None


def _number(obj: dict, key: str, kind: type, default: Any, where: str) -> Any:
    value = obj.get(key, default)
    # bool is an int subclass in Python; JSON true/false is not a number here.
    if isinstance(value, bool) or not isinstance(value, (int, float) if kind is float else int):
        raise ClientError(f"{where}{key}: must be a{'n integer' if kind is int else ' number'}")
    return kind(value)


SETTINGS = ("max_new_tokens", "sampler", "temperature", "top_k", "top_p", "seed")


def generation_settings(
    obj: dict,
    default_max_new_tokens: int,
    max_length: int,
    where: str = "",
    allowed: tuple[str, ...] = (),
) -> GenerationSettings:
    """The sampling fields of `obj`, each checked as `check_sampler_args` checks the flags.

    A field that is neither a setting nor in `allowed` is refused: a typo
    ("temprature") would otherwise be ignored and the default used silently.
    """
    unknown = sorted(set(obj) - set(SETTINGS) - set(allowed))
    if unknown:
        raise ClientError(
            f"{where}{unknown[0]}: unknown field (known: {', '.join(SETTINGS + allowed)})"
        )
    sampler = obj.get("sampler", "greedy")
    if sampler not in SAMPLERS:
        raise ClientError(f"{where}sampler: must be one of {', '.join(SAMPLERS)} (got {sampler!r})")
    settings = GenerationSettings(
        max_new_tokens=_number(obj, "max_new_tokens", int, default_max_new_tokens, where),
        sampler=sampler,
        temperature=_number(obj, "temperature", float, 1.0, where),
        top_k=_number(obj, "top_k", int, 40, where),
        top_p=_number(obj, "top_p", float, 0.9, where),
        seed=_number(obj, "seed", int, 0, where),
    )
    if not 1 <= settings.max_new_tokens <= max_length - 1:
        raise ClientError(
            f"{where}max_new_tokens: must be in [1, {max_length - 1}] "
            f"(the context is {max_length} tokens), got {settings.max_new_tokens}"
        )
    if not (math.isfinite(settings.temperature) and settings.temperature > 0):
        raise ClientError(f"{where}temperature: must be > 0 and finite, got {settings.temperature}")
    if settings.top_k < 0 or (sampler == "top_k" and settings.top_k < 1):
        raise ClientError(f"{where}top_k: must be >= 1 for sampler top_k, >= 0 otherwise")
    if not 0 < settings.top_p <= 1:
        raise ClientError(f"{where}top_p: must be in (0, 1], got {settings.top_p}")
    if not -(2**31) <= settings.seed < 2**31:
        raise ClientError(f"{where}seed: must fit in 32 bits, got {settings.seed}")
    return settings


def prompt_text(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise ClientError(f"{where}prompt: must be a string, got {type(value).__name__}")
    if len(value) > MAX_PROMPT_CHARS:
        raise ClientError(f"{where}prompt: longer than {MAX_PROMPT_CHARS} characters")
    return value


@dataclass(frozen=True)
class PredictRequest:
    """A `:predict` call: its rows and whether it used the columnar format."""

    rows: list[Any]
    columnar: bool


def predict_rows(body: Any) -> PredictRequest:
    """`{"instances": [...]}` or `{"inputs": [...] | {"<name>": [...]}}` -> rows."""
    if not isinstance(body, dict):
        raise ClientError('the body must be a JSON object with "instances" or "inputs"')
    if ("instances" in body) == ("inputs" in body):
        raise ClientError('give exactly one of "instances" (row format) or "inputs" (columnar)')
    columnar = "inputs" in body
    rows = body["inputs"] if columnar else body["instances"]
    if columnar and isinstance(rows, dict):
        if len(rows) != 1:
            raise ClientError('"inputs": one named input (e.g. {"prompts": [...]})')
        rows = next(iter(rows.values()))
    if isinstance(rows, str):
        rows = [rows]
    if not isinstance(rows, list) or not rows:
        raise ClientError(f'"{"inputs" if columnar else "instances"}": must be a non-empty list')
    if len(rows) > MAX_INSTANCES:
        raise ClientError(f"at most {MAX_INSTANCES} instances per request, got {len(rows)}")
    return PredictRequest(rows, columnar)


def instance_prompt(row: Any, index: int, names: tuple[str, ...]) -> tuple[str, dict]:
    """A row: a string, or an object holding it under one of `names` plus settings."""
    where = f"instances[{index}]."
    if isinstance(row, str):
        return prompt_text(row, where), {}
    if not isinstance(row, dict):
        raise ClientError(f"instances[{index}]: must be a string or an object")
    for name in names:
        if name in row:
            return prompt_text(row[name], where), {k: v for k, v in row.items() if k != name}
    raise ClientError(f"instances[{index}]: missing field {names[0]!r}")


def predict_response(values: list[Any], columnar: bool) -> dict:
    return {"outputs": values} if columnar else {"predictions": values}
