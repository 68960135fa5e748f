"""Exceptions and warnings raised by hmix."""

from __future__ import annotations

__all__ = [
    "HmixError",
    "FormulaError",
    "DataError",
    "HmixWarning",
    "ConvergenceWarning",
    "SingularFitWarning",
    "MissingDataWarning",
]


class HmixError(Exception):
    """Base class of every error hmix raises on purpose."""


class FormulaError(HmixError, ValueError):
    """A model formula that cannot be understood.

    The message names the problem and, when known, points at its position in the formula.
    """

    def __init__(self, message: str, formula: str | None = None, position: int | None = None):
        self.message = message
        self.formula = formula
        self.position = position
        super().__init__(self._render())

    def _render(self) -> str:
        if self.formula is None:
            return self.message
        if self.position is None:
            return f"{self.message}\n    {self.formula}"
        pos = min(max(self.position, 0), len(self.formula))
        return f"{self.message} (at position {pos})\n    {self.formula}\n    {' ' * pos}^"


class DataError(HmixError, ValueError):
    """Data that cannot be used for the model asked for (missing columns, bad values, ...)."""


class HmixWarning(UserWarning):
    """Base class of hmix's warnings."""


class ConvergenceWarning(HmixWarning):
    """The optimizer stopped at a point that fails lme4's convergence checks."""


class SingularFitWarning(HmixWarning):
    """The fit is singular: a variance is estimated as zero or correlations as +-1."""


class MissingDataWarning(HmixWarning):
    """Rows were dropped because a variable the formula uses is missing there."""


def user_stacklevel() -> int:
    """The ``stacklevel`` that makes ``warnings.warn`` point at the user's code.

    Counted from the function that calls ``warnings.warn`` outwards, past every frame inside
    the hmix package, so that a warning names the user's call (``hmix.lmer(...)``) however deep
    inside hmix it was raised.
    """
    import os
    import sys

    package = os.path.dirname(os.path.abspath(__file__))
    frame = sys._getframe(1)
    level = 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(package + os.sep):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    return level


def whole_number(value: object, name: str, minimum: int = 1) -> int:
    """``value`` as an int when it is a whole number of at least ``minimum``; else a DataError."""
    import numbers

    ok = isinstance(value, numbers.Integral) and not isinstance(value, bool)
    if isinstance(value, float) and value.is_integer():
        ok = True
    if not ok or int(value) < minimum:  # type: ignore[call-overload]
        raise DataError(f"{name} must be a whole number of at least {minimum}, not {value!r}")
    return int(value)  # type: ignore[call-overload]
