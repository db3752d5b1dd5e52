"""What a numeric setting accepts, said once: the configs check values with it and the
command line parses and explains its flags with it.

    >>> Range(int, 1).describe()
    'a whole number >= 1'
    >>> Range(float, 0, 1).problem("ema_decay", 1.0)
    'ema_decay must be a number >= 0 and < 1, got 1.0'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import ConfigError


@dataclass(frozen=True)
class Range:
    """Whole numbers (`kind=int`) or numbers (`kind=float`) from `low` to `high`, each end
    closed or open; `optional`: None is accepted too (it switches the setting off)."""

    kind: type
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = False
    high_open: bool = True
    optional: bool = False
    note: str = ""  # said after the range, e.g. "(0: off)"

    def accepts(self, value) -> bool:
        if value is None:
            return self.optional
        if isinstance(value, (bool, np.bool_)):
            return False
        if self.kind is int and not isinstance(value, (int, np.integer)):
            return False
        if not isinstance(value, (int, float, np.integer, np.floating)) or not math.isfinite(value):
            return False
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below

    def describe(self, with_none: bool = True) -> str:
        """`'a whole number >= 1'`, `'a number > 0 and <= 1'`, `'a whole number from 1 to 4'`."""
        what = "a whole number" if self.kind is int else "a number"
        bounded_low, bounded_high = math.isfinite(self.low), math.isfinite(self.high)
        if self.kind is int and bounded_low and bounded_high and not self.low_open and not self.high_open:
            text = f"{what} from {_number(self.low)} to {_number(self.high)}"
        else:
            ends = ([f"{'>' if self.low_open else '>='} {_number(self.low)}"] if bounded_low else []) + \
                   ([f"{'<' if self.high_open else '<='} {_number(self.high)}"] if bounded_high else [])
            text = " ".join([what, " and ".join(ends)]).strip()
        if self.note:
            text += f" {self.note}"
        return f"None or {text}" if self.optional and with_none else text

    def problem(self, name: str, value) -> str | None:
        """`'<name> must be <range>, got <value>'`, or None when `value` is accepted."""
        return None if self.accepts(value) else f"{name} must be {self.describe()}, got {value!r}"

    def check(self, name: str, value):
        """`value`, or `ConfigError` saying what `name` accepts."""
        problem = self.problem(name, value)
        if problem:
            raise ConfigError(problem)
        return value

    def parse(self, text: str):
        """The value `text` spells, or `ConfigError('expected <range>, got <text>')`."""
        try:
            value = self.kind(text)
        except (TypeError, ValueError):
            value = None
        if value is None or not self.accepts(value):
            raise ConfigError(f"expected {self.describe(with_none=False)}, got {text!r}")
        return value


POSITIVE = Range(int, 1)
# The smallest share of an image's area a random resized crop keeps (TrainConfig.size_crops, ArrayData.at_size).
AREA_SHARE = Range(float, 0, 1, low_open=True, high_open=False, optional=True, note="(None: whole images)")


def problems(settings, ranges: dict) -> list:
    """What is wrong with the fields of `settings` that `ranges` ({field: Range}) names."""
    found = [accepted.problem(name, getattr(settings, name)) for name, accepted in ranges.items()]
    return [problem for problem in found if problem]


def _number(value) -> str:
    """A bound as a user types it: whole numbers in full (1000000, not 1e+06)."""
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
