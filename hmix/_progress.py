"""Progress bars for loops over refits (bootstrap, cross-validation, leave-one-out, profiles).

tqdm's auto bars: a widget in a notebook (with ipywidgets), text on stderr in a terminal.
"""

from __future__ import annotations

import importlib.util
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

import numpy as np

T = TypeVar("T")


def interactive() -> bool:
    """Whether someone watches: stderr is a terminal, or the code runs in a Jupyter kernel."""
    if getattr(sys.stderr, "isatty", lambda: False)():
        return True
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def progress(items: Iterable[T], total: int, label: str, show: bool | None) -> Iterator[T]:
    """Yield ``items`` under a tqdm bar labelled ``label`` that counts to ``total``.

    ``show=None`` draws the bar in a terminal or a notebook (not in scripts whose stderr goes to
    a file, nor under test runners); ``True`` always; ``False`` never.

    Examples
    --------
    >>> list(progress(range(3), 3, "refits", show=False))
    [0, 1, 2]
    """
    if show is False or (show is None and not interactive()) or total <= 0:
        yield from items
        return
    # (imported on first use: tqdm.auto looks for IPython when imported; without ipywidgets a
    # notebook gets the text bar, without tqdm's warning about it)
    if importlib.util.find_spec("ipywidgets") is None:
        from tqdm.std import tqdm
    else:
        from tqdm.auto import tqdm

    yield from tqdm(items, total=total, desc=label, unit="fit", dynamic_ncols=True)


def traced(f: Callable[[np.ndarray], float], label: str) -> Callable[[np.ndarray], float]:
    """``f`` that prints each evaluation (count, seconds, objective, parameters) on stderr:
    progress of a long fit (``verbose=True``).

    Examples
    --------
    >>> import numpy as np
    >>> g = traced(lambda x: float(x @ x), "demo")
    >>> g(np.array([1.0, 2.0]))  # doctest: +SKIP
    demo  evaluation 1  (0.0 s)  objective 5.000000  at [1. 2.]
    5.0
    """
    count = 0
    start = time.perf_counter()

    def g(x: np.ndarray) -> float:
        nonlocal count
        value = f(x)
        count += 1
        at = np.array2string(np.asarray(x), precision=5, max_line_width=1000)
        seconds = time.perf_counter() - start
        print(
            f"{label}  evaluation {count}  ({seconds:.1f} s)  objective {value:.6f}  at {at}",
            file=sys.stderr,
            flush=True,
        )
        return value

    return g
