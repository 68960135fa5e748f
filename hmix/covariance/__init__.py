"""Covariance structures of random-effects terms: theta <-> the term's relative covariance factor.

A term with k columns per level has covariance Sigma = sigma^2 T T' for every level, with T a
k x k lower-triangular "relative covariance factor". A structure says how its parameters theta
give T: which entries of T can be nonzero (its ``pattern``, the engine only ever touches those),
their values (``lam``), the parameters' bounds and names, and how the variances and
correlations are reported. Unstructured terms (lme4's default) take T's lower triangle as theta
itself. To add a structure, subclass ``CovarianceStructure`` and implement ``lam`` (and
``jacobian`` when lam is not linear in theta).

The formula names them as lme4 2.0 and glmmTMB do: ``us(x | g)`` (unstructured, the same as
``(x | g)``), ``diag(x | g)`` (``Diagonal``), ``cs(x | g)`` (``CompoundSymmetry``) and
``ar1(0 + t | g)`` (``AR1``), the last three with ``hom = TRUE`` for one common variance
(``structure`` builds them from those names).
"""

from __future__ import annotations

from .base import (
    CovarianceStructure,
    Diagonal,
    LevelEstimates,
    ScaledIdentity,
    Unstructured,
    tril_indices,
)
from .correlated import AR1, CompoundSymmetry

__all__ = [
    "CovarianceStructure",
    "LevelEstimates",
    "Unstructured",
    "Diagonal",
    "ScaledIdentity",
    "CompoundSymmetry",
    "AR1",
    "STRUCTURES",
    "structure",
    "tril_indices",
]


STRUCTURES = ("us", "diag", "cs", "ar1")


def structure(kind: str, k: int, hom: bool | None = None) -> CovarianceStructure:
    """The structure the formula names (``us``, ``diag``, ``cs``, ``ar1``) for k columns; ``hom``
    (one common variance) defaults as in lme4 2.0: true for ``ar1``, false otherwise.

    Examples
    --------
    >>> structure("cs", 3)
    CompoundSymmetry(k=3, hom=False)
    >>> structure("diag", 2, hom=True)
    ScaledIdentity(k=2)
    """
    if kind == "us":
        return Unstructured(k)
    if kind == "diag":
        return ScaledIdentity(k) if hom else Diagonal(k)
    if kind == "cs":
        return CompoundSymmetry(k, bool(hom))
    if kind == "ar1":
        return AR1(k, hom is None or hom)
    raise ValueError(f"unknown covariance structure {kind!r}: one of {', '.join(STRUCTURES)}")
