"""Synthetic large data for the scale benchmarks (deterministic: a seed per call).

``crossed(n)``: ``y ~ x + (1 | u) + (1 | i)`` with 20,000 users and 2,000 items, every row a
user and an item drawn at random (so a user meets an item more than once now and then).

``movielens(n)``: MovieLens-shaped ratings. User activity and item popularity follow power laws
(Zipf-like weights), each rating pairs a user drawn by activity with an item drawn by popularity
(a user rates an item at most once), and items with fewer than 50 ratings are dropped, as in
Bates, Alday & Kokandakar (2025)'s restricted ml-32m fit. With the defaults (200,000 users,
16,500 candidate items, 12.5M draws) about 10.5M ratings of about 16,000 items remain; the
most active user has about 10,000 ratings.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["crossed", "movielens"]


def crossed(n: int, users: int = 20_000, items: int = 2_000, seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, users, n, dtype=np.int32)
    i = rng.integers(0, items, n, dtype=np.int32)
    x = rng.standard_normal(n)
    y = 1.0 + 0.5 * x + 0.8 * rng.standard_normal(users)[u] + 0.5 * rng.standard_normal(items)[i]
    y += rng.standard_normal(n)
    return pd.DataFrame({"y": y, "x": x, "u": u, "i": i})


def _zipf_weights(k: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    w = np.arange(1, k + 1, dtype=float) ** -exponent
    return rng.permutation(w / w.sum())


def movielens(
    n: int = 12_500_000,
    users: int = 200_000,
    items: int = 16_500,
    min_ratings: int = 50,
    user_exponent: float = 0.6,
    item_exponent: float = 0.9,
    seed: int = 2,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    pu = _zipf_weights(users, user_exponent, rng)
    pi = _zipf_weights(items, item_exponent, rng)
    # (inverse-CDF draws: numpy's choice with p is ten times slower)
    u = np.minimum(np.searchsorted(np.cumsum(pu), rng.random(n)), users - 1).astype(np.int64)
    i = np.minimum(np.searchsorted(np.cumsum(pi), rng.random(n)), items - 1).astype(np.int64)
    cell = np.unique(u * items + i)  # a user rates an item once
    u, i = (cell // items).astype(np.int32), (cell % items).astype(np.int32)
    keep = np.bincount(i, minlength=items)[i] >= min_ratings
    u, i = u[keep], i[keep]
    m = len(u)
    y = 3.5 + 0.4 * rng.standard_normal(users)[u] + 0.5 * rng.standard_normal(items)[i]
    y += 0.9 * rng.standard_normal(m)
    rating = np.clip(np.round(2 * y) / 2, 0.5, 5.0)
    return pd.DataFrame({"rating": rating, "u": u, "i": i})
