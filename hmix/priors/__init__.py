"""Priors on a mixed model's parameters, as R's blme defines them, and their penalties.

A prior adds its -2 log-density to the criterion (REML or deviance): the optimizer minimizes the
sum, a penalized (maximum a posteriori) fit. On the covariance of a random-effects term:

* ``Wishart(df, scale)`` on the term's covariance (default: df = k + 2.5, scale = inf, which keeps
  it away from singular matrices and, for a scalar term, is ``Gamma(2.5, 0)`` on its SD);
* ``InvWishart(df, scale)``;
* ``Gamma(shape, rate)`` and ``InvGamma(shape, scale)`` on a scalar term's SD
  (``posterior_scale="sd"``) or variance (``"var"``).

On the fixed effects ``Normal(sd)`` (and ``StudentT`` in GLMMs); on the residual variance of an
LMM ``Point(value)`` (sigma fixed), ``InvGamma`` or ``Gamma``. With ``common_scale=True`` (blme's
default for LMMs) a prior is on the covariance relative to sigma^2 (for a term: theta itself), so
sigma and beta still profile out; with False it is on the absolute scale.

Fields left at None take blme's default for where the prior is used (blme 1.0-5):

=================  ====================================  ======================================
prior              LMM                                   GLMM
=================  ====================================  ======================================
Wishart            df = k + 2.5, scale = inf             the same
InvWishart         df = k - 0.998, scale = (df + 0.1) I  df = k - 0.5, scale = 100 / (df + k + 1) I
Gamma              shape 2.5, rate 0, on the SD          the same
InvGamma           shape 0.001, scale 0.051, variance    shape 0.5, scale 100, on the SD
Normal             sd (10, 2.5), common scale            sd (10, 2.5), absolute scale
Gamma, InvGamma    residual: shape 0, rate/scale 0,      (no residual)
                   on the variance
=================  ====================================  ======================================

A two-element ``sd`` (or ``mean``, ``scale``) gives the first fixed effect (the intercept) the
first value and every other the second.
"""

from .base import Prior
from .covariance import CovPrior, Gamma, InvGamma, InvWishart, Wishart
from .fixef import Normal, Point, StudentT
from .model import Priors, SigmaTerms, resolve

__all__ = [
    "Prior",
    "CovPrior",
    "Wishart",
    "InvWishart",
    "Gamma",
    "InvGamma",
    "Normal",
    "StudentT",
    "Point",
    "Priors",
    "SigmaTerms",
    "resolve",
]
