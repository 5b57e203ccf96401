"""The small declarative scheme the section schemas are written in.

A schema is a frozen dataclass; each field is one config key, declared with
`setting(default, check)`. The field's *type hint* gives the accepted Python
types and its `check` (kept in the field's metadata) gives the range or
choice, so `validate` derives every per-key rule from the schema instead of
from a hand-kept table that could fall out of step with the defaults.

The requirement texts are the words of the error message
(`config.KEY: must be <requirement>, got VALUE`); docs and tests quote them,
so the helpers below reproduce them exactly. `{noun}` and `{an_integer}` in a
requirement are filled from the field's type (`int`: "integer" and
"an integer "; `float`: "number" and nothing).
"""

from __future__ import annotations

import dataclasses
import functools
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from tfllm.errors import ConfigError

Kind = type | tuple[type, ...]


@dataclass(frozen=True)
class Check:
    """A constraint beyond the type: a predicate and how the error words it."""

    test: Callable[[Any], bool]
    requirement: str


def setting(default: Any, check: Check | None = None, *, validated: bool = True) -> Any:
    """One config key of a schema: its default and its constraint.

    `validated=False` marks a key `validate` leaves alone (the prompt lists,
    which have never been checked; checking them now would refuse configs that
    run today). A list default is copied per instance, as dataclasses require.
    """
    metadata = {"check": check, "validated": validated}
    if isinstance(default, list):
        return dataclasses.field(default_factory=lambda: list(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _note(text: str) -> str:
    return f" ({text})" if text else ""


def positive(note: str = "") -> Check:
    return Check(lambda v: v > 0, "a positive {noun}" + _note(note))


def non_negative(note: str = "") -> Check:
    return Check(lambda v: v >= 0, "a non-negative {noun}" + _note(note))


def fraction() -> Check:
    """A probability-like value that must stay below 1 (dropout, betas, sparsity)."""
    return Check(lambda v: 0.0 <= v < 1.0, "in [0, 1)")


def interval(
    lo: float,
    hi: float,
    *,
    lo_open: bool = False,
    hi_open: bool = False,
    note: str = "",
    requirement: str = "",
) -> Check:
    """lo..hi with each end open or closed; worded "an integer in [lo, hi]" for ints."""

    def test(v: Any) -> bool:
        above = v > lo if lo_open else v >= lo
        below = v < hi if hi_open else v <= hi
        return above and below

    brackets = ("(" if lo_open else "[") + f"{lo}, {hi}" + (")" if hi_open else "]")
    return Check(test, requirement or "{an_integer}in " + brackets + _note(note))


def one_of(options: Sequence[str], requirement: str = "") -> Check:
    return Check(lambda v: v in options, requirement or f"one of {', '.join(options)}")


def non_empty(what: str) -> Check:
    return Check(bool, f"a non-empty {what}")


def positive_ints(requirement: str, *, non_empty: bool = False) -> Check:
    """A list/tuple of positive ints (conv widths, hidden sizes, bucket lengths)."""

    def test(v: Any) -> bool:
        return (bool(v) or not non_empty) and all(isinstance(w, int) and w > 0 for w in v)

    return Check(test, requirement)


@dataclass(frozen=True)
class Rule:
    """One key's rule as `validate` applies it, derived from a schema field."""

    name: str
    kind: Kind
    check: Check | None
    requirement: str

    def apply(self, section: str, value: Any) -> None:
        """Raises ConfigError naming `config.SECTION.NAME` if `value` breaks the rule."""
        key = f"{section}.{self.name}"
        # bool is an int subclass in Python: never accept it where a number is wanted.
        is_bool = isinstance(value, bool)
        if (is_bool and self.kind is not bool) or not isinstance(value, self.kind):
            # Any tuple of types reads "a number" (the wording since the first
            # version, lists included; kept word for word as tests match on it).
            want = self.kind.__name__ if isinstance(self.kind, type) else "a number"
            got = f"{type(value).__name__} {value!r}"
            raise ConfigError(f"config.{key}: expected {want}, got {got}")
        if self.check is not None and not self.check.test(value):
            raise ConfigError(f"config.{key}: must be {self.requirement}, got {value!r}")


def accepted_kind(hint: Any) -> Kind:
    """The Python types a value of type `hint` may have in a loaded config.

    A float key takes ints too (`--config.train.learning_rate=1` is fine), and a
    tuple key takes lists because JSON (config.json) has no tuples.
    """
    if hint is float:
        return (int, float)
    if typing.get_origin(hint) in (tuple, list):
        return (list, tuple)
    if hint in (int, str, bool):
        return hint
    raise TypeError(f"no config rule for type {hint!r}")


@functools.cache
def rules(schema: type) -> tuple[Rule, ...]:
    """The rules of a schema's validated fields, in declaration order."""
    hints = typing.get_type_hints(schema)
    out = []
    for f in dataclasses.fields(schema):
        if not f.metadata.get("validated", True):
            continue
        hint = hints[f.name]
        check = f.metadata.get("check")
        integer = hint is int
        requirement = ""
        if check is not None:
            requirement = check.requirement.format(
                noun="integer" if integer else "number", an_integer="an integer " if integer else ""
            )
        out.append(Rule(f.name, accepted_kind(hint), check, requirement))
    return tuple(out)


def defaults(schema: type) -> dict[str, Any]:
    """The schema's keys with their defaults, in declaration order."""
    instance = schema()  # list defaults come from their factories, fresh each call
    return {f.name: getattr(instance, f.name) for f in dataclasses.fields(schema)}
