"""Response distributions and links, as small classes (statsmodels' pattern).

A ``Link`` maps the mean to the linear predictor and back, with the derivatives PIRLS and the
exact gradient need. A ``Family`` is a distribution with a link: its variance function, deviance
residuals, log-likelihood with its normalizing constants, R's starting means, the responses it
accepts, and how to draw from it. ``Family.bind`` ties one to a response and prior weights: the
``Observed`` object PIRLS evaluates thousands of times a fit, with what depends only on the data
computed once. To add a family, subclass ``Family`` (and ``Observed`` only where a faster
deviance pays); to add a link, subclass ``Link`` and list it in the family's ``links``.
"""

from __future__ import annotations

from ..errors import DataError
from .base import Family, Observed
from .links import CLogLog, Identity, Inverse, Link, Log, Logit, Probit
from .lme4 import Binomial, Gaussian, Poisson

__all__ = [
    "Link",
    "Logit",
    "Probit",
    "CLogLog",
    "Log",
    "Identity",
    "Inverse",
    "Family",
    "Binomial",
    "Poisson",
    "Gaussian",
    "Observed",
    "get_family",
]

_FAMILIES: dict[str, type[Family]] = {c.name: c for c in (Binomial, Poisson, Gaussian)}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """A ``Family`` from a name (``"binomial"``, ``"poisson"``, ``"gaussian"``) and an optional
    link (the family's canonical one by default).

    Examples
    --------
    >>> import hmix
    >>> str(hmix.get_family("binomial", "probit")), str(hmix.get_family("poisson"))
    ('binomial  ( probit )', 'poisson  ( log )')
    """
    if isinstance(family, Family):
        if link is not None and link != family.link.name:
            return type(family)(link)  # type: ignore[arg-type]
        return family
    name = str(family).lower()
    if name not in _FAMILIES:
        raise DataError(f"family must be 'binomial' or 'poisson' (or 'gaussian' with lmer), not {family!r}")
    return _FAMILIES[name](link)  # type: ignore[arg-type]
