"""How much the estimates depend on the prior: one model fitted under several priors, side by side.

Bayesian texts on hierarchical models ask for it ("check whether the results change with
different reasonable priors"): a weakly informative prior should move an estimate off the
boundary without moving the well-identified ones. The unpenalized fit (``lmer`` or ``glmer``)
comes first.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import pandas as pd

from .design import build_design
from .errors import DataError
from .families import Family, get_family
from .priors import Prior, resolve
from .results import MixedModel

__all__ = ["prior_sensitivity", "PriorSensitivity"]

_KEYS = ("cov_prior", "fixef_prior", "resid_prior")


def _label(spec: Any) -> str:
    """A short name for a prior specification: its name, or the class with the fields given."""
    if spec is None:
        return "flat"
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Prior):
        given = [
            f"{f.name}={getattr(spec, f.name)!r}"
            for f in fields(spec)  # type: ignore[arg-type]
            if getattr(spec, f.name) is not None and getattr(spec, f.name) != f.default
        ]
        return f"{type(spec).__name__}({', '.join(given)})"
    if isinstance(spec, Mapping):
        return "; ".join(f"{k}: {_label(v)}" for k, v in spec.items())
    return repr(spec)


def _arguments(spec: Any) -> dict[str, Any]:
    """blmer's prior arguments from one specification: a covariance prior (object, name or dict
    of groups), or a dict with ``cov_prior`` / ``fixef_prior`` / ``resid_prior``."""
    if isinstance(spec, Mapping) and spec and set(spec) <= set(_KEYS):
        return {"cov_prior": None, **spec}
    return {"cov_prior": spec}


@dataclass(frozen=True, eq=False)
class PriorSensitivity:
    """The estimates of one model under several priors (``hmix.prior_sensitivity``).

    Attributes
    ----------
    estimates : pandas.DataFrame
        One row per parameter (fixed effects, then lme4's ``sd_``/``cor_`` names and ``sigma``),
        one column per prior; the first column is the fit without priors.
    std_errors : pandas.DataFrame
        Standard errors of the fixed effects, laid out as ``estimates``.
    singular : pandas.Series
        Whether each fit is singular (a variance at zero or a correlation at +-1).
    penalty : pandas.Series
        Each fit's prior deviance (-2 log prior density at its estimates; 0 without priors).
    models : dict
        The fitted models by column label.

    Examples
    --------
    >>> import hmix
    >>> s = hmix.prior_sensitivity("Yield ~ 1 + (1 | Batch)", hmix.datasets.load("Dyestuff2"))
    >>> s.table.loc["singular"].tolist()
    [True, False]
    >>> s.to_frame()[["prior", "parameter", "kind"]].head(2)
             prior    parameter   kind
    0  none (lmer)  (Intercept)  fixef
    1      wishart  (Intercept)  fixef
    """

    estimates: pd.DataFrame
    std_errors: pd.DataFrame
    singular: pd.Series
    penalty: pd.Series
    models: dict[str, MixedModel]

    @property
    def table(self) -> pd.DataFrame:
        """The estimates with a last row saying which fits are singular."""
        out = self.estimates.astype(object)
        out.loc["singular"] = self.singular
        return out

    def to_frame(self) -> pd.DataFrame:
        """Tidy: one row per prior and parameter, with ``kind`` (fixef, sd, cor, sigma),
        ``estimate``, ``std_error`` (fixed effects) and ``singular``."""
        long = self.estimates.rename_axis(index="parameter", columns="prior").stack().rename("estimate")
        se = self.std_errors.rename_axis(index="parameter", columns="prior").stack().rename("std_error")
        out = pd.concat([long, se], axis=1).reset_index()
        out["kind"] = [
            "fixef" if p in self.std_errors.index else p.split("_")[0] if "_" in p and "|" in p else p
            for p in out["parameter"]
        ]
        out["singular"] = out["prior"].map(self.singular).astype(bool)
        return out[["prior", "parameter", "kind", "estimate", "std_error", "singular"]]

    def plot(self, parameters: Sequence[str] | None = None, axes: Any = None) -> Any:
        """Each parameter's estimate under each prior (``hmix.plot.prior_sensitivity``)."""
        from .plot import prior_sensitivity as draw

        return draw(self, parameters=parameters, axes=axes)

    def __repr__(self) -> str:
        return self.table.to_string(float_format=lambda v: f"{v:.4g}")

    def _repr_html_(self) -> str:
        return str(self.table.to_html(float_format=lambda v: f"{v:.4g}"))


def prior_sensitivity(
    formula: str,
    data: pd.DataFrame,
    priors: Sequence[Any] | Mapping[str, Any] = ("wishart",),
    *,
    family: str | Family | None = None,
    REML: bool = True,
    **fit_args: Any,
) -> PriorSensitivity:
    """Fit one model without priors and under each of ``priors``; the estimates side by side.

    Parameters
    ----------
    formula : str
    data : pandas.DataFrame
    priors : sequence or dict
        Each entry a covariance prior (``hmix.priors`` object, its name, or a dict from grouping
        factors to priors) or a dict of ``blmer``'s arguments (``{"cov_prior": ...,
        "fixef_prior": ...}``); a dict from labels to such entries names the columns.
    family : str or Family, optional
        A GLMM's family (``bglmer``); None for a linear mixed model (``blmer``).
    REML : bool, default True
        For linear mixed models.
    **fit_args
        ``weights``, ``offset``, and for GLMMs ``link`` and ``nAGQ``.

    Returns
    -------
    PriorSensitivity
        ``table`` (estimates and the singular flag, one column per prior, the unpenalized fit
        first), ``estimates``, ``std_errors``, ``singular``, ``models``, ``to_frame()``,
        ``plot()``.

    Examples
    --------
    >>> import hmix
    >>> d2 = hmix.datasets.load("Dyestuff2")
    >>> s = hmix.prior_sensitivity("Yield ~ 1 + (1 | Batch)", d2,
    ...                            ["wishart", hmix.priors.Gamma(shape=2, rate=0.5)])
    >>> s.estimates.round(3)  # doctest: +NORMALIZE_WHITESPACE
                          none (lmer)  wishart  Gamma(shape=2, rate=0.5)
    parameter
    (Intercept)                 5.666    5.666                     5.666
    sd_(Intercept)|Batch        0.000    1.489                     1.076
    sigma                       3.716    3.626                     3.657
    >>> s.singular.tolist()
    [True, False, False]
    """
    from .checks import check_lmer_response
    from .fit import check_glmm, fit_glmm, fit_lmm
    from .lmm import check_lmm

    labels = list(priors) if isinstance(priors, Mapping) else [_label(p) for p in priors]
    specs = list(priors.values()) if isinstance(priors, Mapping) else list(priors)
    if len(set(labels)) != len(labels):
        raise DataError(f"two priors have the same label ({labels}); pass a dict to name them")
    glmm = family is not None
    fam = None if family is None else get_family(family, fit_args.pop("link", None))
    nAGQ = fit_args.pop("nAGQ", 1)
    unknown = set(fit_args) - {"weights", "offset"}
    if unknown:
        raise DataError(
            f"unknown arguments {sorted(unknown)}; prior_sensitivity takes weights, offset, link, nAGQ"
        )
    design = build_design(
        formula, data, binary_ok=glmm and fam is not None and fam.name == "binomial", **fit_args
    )
    name = str(data.attrs.get("name", "data"))
    models: dict[str, MixedModel] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # (the singular flag says what the warnings would)
        if fam is not None:
            check_glmm(design, fam)
            models["none (glmer)"] = fit_glmm(design, fam, nAGQ=nAGQ, data_name=name)
        else:
            check_lmer_response(design)
            check_lmm(design)
            models["none (lmer)"] = fit_lmm(design, REML=REML, data_name=name)
        for label, spec in zip(labels, specs):
            pr = resolve(design, **_arguments(spec), glmm=glmm)
            if fam is not None:
                models[label] = fit_glmm(design, fam, nAGQ=nAGQ, data_name=name, priors=pr)
            else:
                models[label] = fit_lmm(design, REML=REML, data_name=name, priors=pr)
    first = next(iter(models.values()))
    index = pd.Index(list(first.fixef.index) + first.varpar_names(), name="parameter")
    est = pd.DataFrame({k: np.r_[m.beta, m.varpar()] for k, m in models.items()}, index=index)
    se = pd.DataFrame({k: m.std_errors.to_numpy() for k, m in models.items()}, index=first.fixef.index)
    se.index.name = "parameter"
    return PriorSensitivity(
        estimates=est,
        std_errors=se,
        singular=pd.Series({k: bool(m.singular) for k, m in models.items()}, name="singular"),
        penalty=pd.Series({k: float(m.penalty) for k, m in models.items()}, name="penalty"),
        models=models,
    )
