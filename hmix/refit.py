"""Refit a fitted model to another design: a subset of its rows, or a new response."""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING, Any

from .design import Design

if TYPE_CHECKING:
    from .results import MixedModel


def refit(model: MixedModel, design: Design, *, check_conv: bool = False, quiet: bool = True) -> Any:
    """Fit ``model``'s specification (REML or ML; family, link and nAGQ) to ``design``.

    Refits inside resampling loops skip the convergence checks and silence warnings by default;
    the callers count singular or unconverged refits themselves.
    """
    from .glmm import fit_glmm
    from .lmm import fit_lmm

    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        family = getattr(model, "family", None)
        if family is None:
            return fit_lmm(design, REML=bool(getattr(model, "REML", False)), check_conv=check_conv)
        return fit_glmm(
            design,
            family,
            nAGQ=int(getattr(model, "nAGQ", 1)),
            vcov_method="pirls",
            check_conv=check_conv,
        )
