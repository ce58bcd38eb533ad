"""The policies' compiled kernels, cached in a directory named by their sources.

Numba keys a cached kernel on the source file that defines it, but a kernel also compiles in
functions of other files (:mod:`perllm.physics`, the estimates, the miss probability, the queue
order): an edit there alone would leave the old kernel in the cache, and it would run. So
:func:`kernel` caches in a directory named by a digest of every file compiled into a kernel
(those of this package that define kernels or mention numba, and :mod:`perllm.physics`): an
edit to any of them starts a fresh cache. The directory is
``policies/__pycache__/numba-DIGEST``, or ``numba-DIGEST`` under ``NUMBA_CACHE_DIR`` where that
is set; where it cannot be written, numba falls back to its own locations. Numba's setting is
changed only while a kernel is defined, so the caller's own numba functions cache where they
would anyway.
"""

from __future__ import annotations

import functools
import hashlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

from numba import njit
from numba.core import config

F = TypeVar("F", bound=Callable[..., Any])

_POLICIES = Path(__file__).parent
_PHYSICS = _POLICIES.parent / "physics.py"


@functools.cache
def cache_directory() -> str:
    """Where the kernels of these sources are cached (see the module docstring)."""
    digest = hashlib.sha256()
    for path in [_PHYSICS, *sorted(_POLICIES.glob("*.py"))]:
        text = path.read_bytes()
        if path == _PHYSICS or b"numba" in text or b"kernel_cache" in text:
            digest.update(path.name.encode() + b"\0" + text + b"\0")
    base = os.environ.get("NUMBA_CACHE_DIR") or str(_POLICIES / "__pycache__")
    return str(Path(base) / f"numba-{digest.hexdigest()[:16]}")


def kernel(func: F) -> F:
    """``numba.njit(cache=True)``, cached in :func:`cache_directory`."""
    settings = vars(config)  # numba sets its options on the module at run time
    previous = settings["CACHE_DIR"]
    settings["CACHE_DIR"] = cache_directory()
    try:
        return cast(F, njit(cache=True)(func))
    finally:
        settings["CACHE_DIR"] = previous
