"""A dependency-free progress bar on stderr for refit loops (bootstrap, cross-validation)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")


def progress(items: Iterable[T], total: int, label: str, show: bool | None) -> Iterator[T]:
    """Yield ``items``, drawing ``label [#####     ] i/total  elapsed`` on stderr.

    ``show=None`` draws only when stderr is a terminal; ``True`` always; ``False`` never.
    """
    stream = sys.stderr
    if show is None:
        show = bool(getattr(stream, "isatty", lambda: False)())
    if not show or total <= 0:
        yield from items
        return
    start = time.perf_counter()
    width = 24
    last = -1.0

    def draw(i: int) -> None:
        filled = int(width * i / total)
        elapsed = time.perf_counter() - start
        stream.write(f"\r{label} [{'#' * filled}{' ' * (width - filled)}] {i}/{total}  {elapsed:.1f} s")
        stream.flush()

    draw(0)
    for i, item in enumerate(items, 1):
        yield item
        now = time.perf_counter()
        if now - last > 0.1 or i == total:
            draw(i)
            last = now
    stream.write("\n")
    stream.flush()
