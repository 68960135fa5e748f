"""Command line: ``hmix fit FORMULA --data NAME_OR_CSV``."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from . import datasets
from .errors import HmixError, HmixWarning

__all__ = ["main"]


def _read_data(spec: str) -> pd.DataFrame:
    path = Path(spec)
    if path.suffix.lower() in {".csv", ".txt"} or path.exists():
        if not path.exists():
            raise HmixError(f"no such file: {spec}")
        df = pd.read_csv(path)
        df.attrs["name"] = path.stem
        return df
    return datasets.load(spec)


def _parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="hmix", description="Fit mixed models the way lme4 does.")
    p.add_argument("--version", action="version", version=f"hmix {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    fit = sub.add_parser("fit", help="fit a model and print its summary")
    fit.add_argument("formula", help='lme4 formula, e.g. "Reaction ~ Days + (Days | Subject)"')
    fit.add_argument(
        "--data",
        required=True,
        help="a bundled dataset name (" + ", ".join(datasets._DATASETS) + ") or a CSV file",
    )
    fit.add_argument(
        "--ml", action="store_true", help="maximum likelihood instead of REML (gaussian models only)"
    )
    fit.add_argument(
        "--family", default="gaussian", help="gaussian (default, lmer), binomial or poisson (glmer)"
    )
    fit.add_argument("--link", default=None, help="link for --family (logit, probit, cloglog, log)")
    fit.add_argument(
        "--nagq", type=int, default=None, help="quadrature nodes for glmer (0, 1 or more; default 1)"
    )
    fit.add_argument("--factors", default="", help="comma-separated CSV columns to read as labels")
    sub.add_parser("datasets", help="list the bundled datasets")
    return p


def _check_options(args: argparse.Namespace, family: str) -> None:
    """Options that do not apply to the model asked for are refused, not ignored."""
    if family == "gaussian":
        given = [o for o, v in (("--link", args.link), ("--nagq", args.nagq)) if v is not None]
        if given:
            raise HmixError(
                f"{' and '.join(given)} appl{'y' if len(given) > 1 else 'ies'} to glmer's families "
                "(--family binomial or poisson), not to a gaussian model (lmer); drop "
                f"{'them' if len(given) > 1 else 'it'}"
            )
    elif args.ml:
        raise HmixError(
            f"--ml applies to gaussian models (lmer's REML or ML); a {family} model is always fitted "
            "by maximum likelihood: drop --ml"
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``hmix`` command. Returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "datasets":
            with pd.option_context("display.width", 200, "display.max_colwidth", 90):
                print(datasets.list_datasets().to_string())
            return 0
        data = _read_data(args.data)
        for col in filter(None, (c.strip() for c in args.factors.split(","))):
            if col not in data.columns:
                raise HmixError(f"--factors names '{col}', which is not a column of the data")
            data[col] = data[col].astype(str)
        family = args.family.lower()
        _check_options(args, family)
        from .fit import glmer, lmer
        from .results import GeneralizedLinearMixedModel, LinearMixedModel

        model: LinearMixedModel | GeneralizedLinearMixedModel
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", HmixWarning)
            if family == "gaussian":
                model = lmer(args.formula, data, REML=not args.ml)
            else:
                nagq = 1 if args.nagq is None else args.nagq
                model = glmer(args.formula, data, family=family, link=args.link, nAGQ=nagq)
        print(model.summary())
        for w in caught:
            if str(w.message) not in model.optsum.warnings:
                print(f"warning: {w.message}", file=sys.stderr)
        return 0
    except HmixError as exc:
        print(f"hmix: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
