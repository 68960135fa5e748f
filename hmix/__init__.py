"""hmix: linear and generalized linear mixed models in the style of R's lme4."""

from __future__ import annotations

from . import anova, datasets, ddf, hypotheses, plot
from .bootstrap import bootstrap
from .compare import compare
from .crossval import CrossValidation, cross_validate
from .design import Design, build_design
from .errors import (
    ConvergenceWarning,
    DataError,
    FormulaError,
    HmixError,
    HmixWarning,
    MissingDataWarning,
    SingularFitWarning,
)
from .families import Binomial, Family, Gamma, Gaussian, NegativeBinomial, Poisson, get_family
from .fit import glmer, lmer
from .formula import ParsedFormula, parse_formula
from .glmm import GLMMObjective, PirlsSettings
from .lmm import LMMObjective
from .loo import LOO
from .optimize import OptSummary
from .results import GeneralizedLinearMixedModel, LinearMixedModel, MixedModel

__version__ = "0.1.0"

__all__ = [
    "lmer",
    "glmer",
    "compare",
    "cross_validate",
    "bootstrap",
    "LOO",
    "CrossValidation",
    "LinearMixedModel",
    "GeneralizedLinearMixedModel",
    "GLMMObjective",
    "Family",
    "Binomial",
    "Poisson",
    "Gaussian",
    "NegativeBinomial",
    "Gamma",
    "get_family",
    "PirlsSettings",
    "MixedModel",
    "LMMObjective",
    "OptSummary",
    "build_design",
    "Design",
    "parse_formula",
    "ParsedFormula",
    "datasets",
    "plot",
    "ddf",
    "anova",
    "hypotheses",
    "HmixError",
    "FormulaError",
    "DataError",
    "HmixWarning",
    "ConvergenceWarning",
    "SingularFitWarning",
    "MissingDataWarning",
    "__version__",
]
