"""What a config dataclass may say about its fields: ranges, validators, neutral values (a leaf module).

Every config section is a dataclass; ``rosa.config`` checks a composed run against them. A field's
``metadata`` carries its check (``one_of``/``check``/``validator``: the one-line error names the key,
the bad value and what is allowed) and, for a key added after runs existed, its ``neutral`` value (the
behaviour from before the key; ``rosa.runs.run_identity`` leaves it out of the run's hash there).
Method modules import this to declare their own config next to their code.
"""

from __future__ import annotations

import difflib
import re


class ConfigError(ValueError):
    """A bad configuration value; ``str(err)`` is the one-line message shown to the user."""


def check(predicate, allowed: str) -> dict:
    """Field metadata: a range check and its description for the error message."""
    return {"check": predicate, "allowed": allowed}


def one_of(*choices) -> dict:
    """Field metadata: the value must be one of ``choices`` (the error lists them, with a did-you-mean)."""
    return {"choices": choices}


def validator(function) -> dict:
    """Field metadata: ``function(value, key)`` raises ConfigError (one line) for a bad value."""
    return {"validate": function}


def neutral(value) -> dict:
    """Field metadata of a key added after runs existed: ``value`` reproduces the behaviour from
    before the key; at that value the key stays out of the run identity (``rosa.runs``)."""
    return {"neutral": value}


NOT_IDENTITY = {"identity": False}  # field metadata: the key cannot change the trained weights (rosa.runs)


def int_range(low: int, high: int) -> dict:
    return check(lambda v: low <= v <= high, f"an integer in [{low}, {high}]")


positive = check(lambda v: v > 0, "a number > 0")
at_least_1 = check(lambda v: v >= 1, "an integer >= 1")
non_negative = check(lambda v: v >= 0, "a number >= 0")
probability = check(lambda v: 0 <= v < 1, "a number in [0, 1)")
unit_interval = check(lambda v: 0 <= v <= 1, "a number in [0, 1]")


def did_you_mean(value, options) -> str:
    close = difflib.get_close_matches(str(value), [str(o) for o in options], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_target_modules(value, key: str) -> None:
    allowed = "'all-linear', a non-empty list of module names or a regular expression (full match)"
    if isinstance(value, str) and value:
        if value == "all-linear":
            return
        try:
            re.compile(value)
        except re.error as err:
            raise ConfigError(
                f"{key}={value!r} is not a valid regular expression ({err}); allowed: {allowed}"
            ) from None
        return
    if isinstance(value, list) and value and all(isinstance(v, str) and v for v in value):
        return
    raise ConfigError(f"{key}={value!r} is not allowed; allowed: {allowed}")


TARGET_MODULES = validator(_check_target_modules)  # fnmodel.target_modules of every adapter method
