"""One BLAS thread for the length of a GLMM fit.

numpy's and scipy's wheels from PyPI each carry their own copy of OpenBLAS, each with its own
thread pool. PIRLS alternates between them at every step (numpy's for products over the rows,
scipy's LAPACK for the factorization), and two pools that each want every core wait on each
other's spinning threads, which on a two-core machine made a Poisson GLMM many times slower
(the performance page has the figures). Linear mixed models keep
their threads: their evaluations use scipy's LAPACK alone, where threads pay for large blocks.

The limit is reference-counted under a lock, so fits running in several Python threads at once
restore the original limits only when the last of them ends. While a fit runs, other threads'
BLAS calls are held to one thread too.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_lock = threading.Lock()
_depth = 0
_controller: Any = None
_limiter: Any = None


@contextmanager
def one_blas_thread() -> Iterator[None]:
    """Hold every BLAS library this process has loaded to one thread inside the block."""
    global _depth, _controller, _limiter
    with _lock:
        if _depth == 0:
            if _controller is None:
                from threadpoolctl import ThreadpoolController

                _controller = ThreadpoolController()  # (a few ms: once per process)
            _limiter = _controller.limit(limits=1, user_api="blas")
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                _limiter.restore_original_limits()
                _limiter = None
