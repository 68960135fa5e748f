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

from dataclasses import replace

from ..errors import DataError
from .base import Family, Observed
from .dispersion import Gamma, NegativeBinomial
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
    "NegativeBinomial",
    "Gamma",
    "Observed",
    "get_family",
]

_FAMILIES: dict[str, type[Family]] = {
    **{c.name: c for c in (Binomial, Poisson, Gaussian, NegativeBinomial, Gamma)},
    "nbinom2": NegativeBinomial,  # (glmmTMB's name)
}


def get_family(family: str | Family, link: str | None = None) -> Family:
    """A ``Family`` from a name (``"binomial"``, ``"poisson"``, ``"negative_binomial"`` (or
    ``"nbinom2"``), ``"gamma"``, ``"gaussian"``) and an optional link (the family's default,
    its first in ``links``, otherwise). A negative binomial's theta and a Gamma's dispersion are
    then estimated; give a family object (``hmix.NegativeBinomial(theta=2)``) to fix them.

    Examples
    --------
    >>> import hmix
    >>> str(hmix.get_family("binomial", "probit")), str(hmix.get_family("poisson"))
    ('binomial  ( probit )', 'poisson  ( log )')
    """
    if isinstance(family, Family):
        if link is not None and link != family.link.name:
            return replace(family, link=link)  # type: ignore[arg-type]
        return family
    name = str(family).lower()
    if name not in _FAMILIES:
        raise DataError(
            "family must be 'binomial', 'poisson', 'negative_binomial' or 'gamma' (or 'gaussian' "
            f"with lmer), not {family!r}"
        )
    return _FAMILIES[name](link)  # type: ignore[arg-type]
