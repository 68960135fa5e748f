"""The bundled datasets: every one loads, as R ships it.

grouseticks and Salamanders are checked cell by cell against tests/data, R's own data frames
written by write.csv (lme4 1.1-31's grouseticks; glmmTMB 1.1.5's Salamanders, by
tests/reference/make_glmmtmb_blme_data.R), so the glmmTMB references hold for the bundled
copies; exact equality.
"""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import DATA

from hmix import datasets
from hmix.errors import DataError

# name -> (rows, columns read as labels): R's dimensions and factors
SHAPES = {
    "sleepstudy": (180, ["Subject"]),
    "Dyestuff": (30, ["Batch"]),
    "Dyestuff2": (30, ["Batch"]),
    "Penicillin": (144, ["plate", "sample"]),
    "Pastes": (60, ["batch", "cask", "sample"]),
    "cbpp": (56, ["herd", "period"]),
    "grouseticks": (403, ["INDEX", "BROOD", "LOCATION", "YEAR"]),
    "Salamanders": (644, ["site", "mined", "spp"]),
}


def test_every_dataset_is_listed_and_loads() -> None:
    listed = datasets.list_datasets()
    assert list(listed.index) == list(SHAPES)
    for name, (rows, labels) in SHAPES.items():
        df = datasets.load(name.lower())
        assert len(df) == rows == listed.loc[name, "rows"]
        assert df.attrs["name"] == name
        for c in labels:
            assert all(isinstance(v, str) for v in df[c]), f"{name}.{c} is not read as labels"


@pytest.mark.parametrize("name", ["grouseticks", "Salamanders"])
def test_count_datasets_are_the_test_references(name: str) -> None:
    labels = SHAPES[name][1]
    ours = datasets.load(name)
    ours.attrs = {}
    pd.testing.assert_frame_equal(ours, pd.read_csv(DATA / f"{name}.csv", dtype={c: str for c in labels}))


def test_count_datasets_as_described() -> None:
    g = datasets.load("grouseticks")
    assert (g["BROOD"].nunique(), g["LOCATION"].nunique(), sorted(g["YEAR"].unique())) == (
        118,
        63,
        ["95", "96", "97"],
    )
    s = datasets.load("Salamanders")
    assert (s["site"].nunique(), s["spp"].nunique(), sorted(s["sample"].unique())) == (23, 7, [1, 2, 3, 4])
    assert sorted(s["spp"].unique())[0] == "DES-L" and sorted(s["mined"].unique()) == ["no", "yes"]


def test_each_load_is_a_new_copy() -> None:
    a = datasets.load("Salamanders")
    a.loc[0, "count"] = -1
    assert datasets.load("Salamanders").loc[0, "count"] == 0


def test_unknown_name_lists_the_datasets() -> None:
    with pytest.raises(DataError, match="grouseticks, Salamanders"):
        datasets.load("salamander")
