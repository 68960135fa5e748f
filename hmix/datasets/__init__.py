"""Example datasets from R's lme4 and glmmTMB, bundled with hmix.

Grouping columns are read as labels (strings), not numbers; a factor's levels sort as strings,
which is not always the order R's data frame has (the baseline level may differ).

Counts for negative binomial and zero-inflated models:

``grouseticks`` (lme4; Elston et al. 2001, Parasitology 122: 563-569)
    ``TICKS``, the ticks counted on the head of chick ``INDEX``; its ``BROOD`` and
    ``LOCATION``; ``HEIGHT``, the altitude (m); ``YEAR`` (95, 96, 97); ``cHEIGHT``, the altitude
    minus its mean.
``Salamanders`` (glmmTMB; Price et al. 2016, J. Appl. Ecol. 53: 459-468, data on Dryad,
doi:10.5061/dryad.5m8f6)
    ``count`` of salamanders of species or life stage ``spp`` at stream ``site`` on visit
    ``sample`` (1-4); ``mined``, whether mountaintop-removal coal mining affected the site;
    ``cover`` (cover objects in the stream), ``DOP`` (days since rain), ``Wtemp`` (water
    temperature) and ``DOY`` (day of year), all standardized. The baselines here are ``spp``
    "DES-L" and ``mined`` "no" (in R "GP" and "yes").
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from ..errors import DataError

__all__ = ["load", "list_datasets"]

# name -> (columns read as labels, one-line description)
_DATASETS: dict[str, tuple[tuple[str, ...], str]] = {
    "sleepstudy": (("Subject",), "Reaction times (ms) of 18 subjects over 10 days of sleep deprivation"),
    "Dyestuff": (("Batch",), "Yield of dyestuff from 6 batches of an intermediate product, 5 samples each"),
    "Dyestuff2": (("Batch",), "Simulated yields like Dyestuff, where the batch variance is zero"),
    "Penicillin": (
        ("plate", "sample"),
        "Diameters of growth-inhibition zones: 24 plates crossed with 6 samples",
    ),
    "Pastes": (("batch", "cask", "sample"), "Strength of paste: 3 casks nested in each of 10 batches"),
    "cbpp": (
        ("herd", "period"),
        "Contagious bovine pleuropneumonia: incidence of new cases in 15 herds over 4 periods",
    ),
    "grouseticks": (
        ("INDEX", "BROOD", "LOCATION", "YEAR"),
        "Ticks on the heads of 403 red grouse chicks from 118 broods at 63 locations, 1995-97",
    ),
    "Salamanders": (
        ("site", "mined", "spp"),
        "Counts of 7 salamander species or stages in 4 visits to 23 stream sites, mined or not",
    ),
}


def list_datasets() -> pd.DataFrame:
    """The bundled datasets: name, rows, columns and a description.

    Examples
    --------
    >>> from hmix import datasets
    >>> "sleepstudy" in datasets.list_datasets().index
    True
    """
    rows = []
    for name, (_, desc) in _DATASETS.items():
        df = load(name)
        rows.append({"name": name, "rows": len(df), "columns": ", ".join(df.columns), "description": desc})
    return pd.DataFrame(rows).set_index("name")


def load(name: str) -> pd.DataFrame:
    """Load a bundled dataset as a DataFrame (a new copy each call).

    Parameters
    ----------
    name : str
        One of ``sleepstudy``, ``Dyestuff``, ``Dyestuff2``, ``Penicillin``, ``Pastes``, ``cbpp``,
        ``grouseticks``, ``Salamanders`` (case-insensitive).

    Examples
    --------
    >>> from hmix import datasets
    >>> datasets.load("sleepstudy").shape
    (180, 3)
    """
    lookup = {k.lower(): k for k in _DATASETS}
    key = lookup.get(str(name).lower())
    if key is None:
        raise DataError(f"no bundled dataset '{name}'; there are: {', '.join(_DATASETS)}")
    labels, _ = _DATASETS[key]
    path = resources.files(__package__).joinpath("data").joinpath(f"{key}.csv")
    with path.open("r") as fh:
        df = pd.read_csv(fh, dtype={c: str for c in labels})
    df.attrs["name"] = key
    return df
