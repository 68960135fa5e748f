"""Derive the test-only datasets in tests/data from hmix's bundled datasets (deterministic).

usage (from the repository root):
    python tests/reference/make_data.py [SRC_DIR] [SHARED_DIR]

SRC_DIR holds sleepstudy.csv and cbpp.csv (default: hmix/datasets/data). SHARED_DIR, if given,
holds VerbAgg.csv and grouseticks.csv to copy verbatim into tests/data (they were copied once
from the team's shared data folder; without SHARED_DIR the existing copies are kept).

No randomness: the rows given missing values are fixed lists. Original cells are kept as text,
so values round-trip exactly; NA is written as an empty field.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "tests" / "data"

# 0-based row numbers of sleepstudy (180 rows) that get a missing value; all distinct.
NA_REACTION = [3, 27, 58, 101, 163]
NA_DAYS = [12, 77, 140]
NA_SUBJECT = [45, 120]


def _read_text(path: Path) -> pd.DataFrame:
    return pd.read_csv(path, dtype=str, keep_default_na=False)


def sleepstudy_extra(src: Path) -> pd.DataFrame:
    df = _read_text(src / "sleepstudy.csv")
    days = df["Days"].astype(int)
    df["phase"] = ["early" if d < 5 else "late" for d in days]
    df["w"] = [f"{1 + (d % 3) / 2:g}" for d in days]  # prior weights 1, 1.5, 2
    df["off"] = [f"{2.5 * d:g}" for d in days]  # offset 0, 2.5, 5, ...
    df["Days2"] = [str(2 * d) for d in days]  # collinear with Days: rank-deficient X
    return df


def sleepstudy_na(src: Path) -> pd.DataFrame:
    df = _read_text(src / "sleepstudy.csv")
    rows = NA_REACTION + NA_DAYS + NA_SUBJECT
    assert len(set(rows)) == len(rows)
    df.loc[NA_REACTION, "Reaction"] = ""
    df.loc[NA_DAYS, "Days"] = ""
    df.loc[NA_SUBJECT, "Subject"] = ""
    return df


def cbpp_extra(src: Path) -> pd.DataFrame:
    df = _read_text(src / "cbpp.csv")
    df["prop"] = [repr(int(i) / int(s)) for i, s in zip(df["incidence"], df["size"])]
    return df


def main(argv: list[str]) -> None:
    src = Path(argv[1]) if len(argv) > 1 else ROOT / "hmix" / "datasets" / "data"
    OUT.mkdir(parents=True, exist_ok=True)
    for name, make in [
        ("sleepstudy_extra", sleepstudy_extra),
        ("sleepstudy_na", sleepstudy_na),
        ("cbpp_extra", cbpp_extra),
    ]:
        make(src).to_csv(OUT / f"{name}.csv", index=False)
        print("wrote", OUT / f"{name}.csv")
    if len(argv) > 2:
        for name in ["VerbAgg.csv", "grouseticks.csv"]:
            shutil.copyfile(Path(argv[2]) / name, OUT / name)
            print("copied", OUT / name)


if __name__ == "__main__":
    main(sys.argv)
