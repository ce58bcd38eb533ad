"""The policies' compiled kernels, cached in a directory named by their sources.

Numba keys a cached kernel on the source file that defines it, but a kernel also compiles in
functions of other files (:mod:`perllm.physics`, the estimates, the miss probability, the queue
order): an edit there alone would leave the old kernel in the cache, and it would run. So
:func:`kernel` caches in a directory named by a digest of every file a kernel could compile in
(all of this package's modules, and :mod:`perllm.physics`): an edit to any of them starts a
fresh cache. The directory is ``numba-DIGEST`` under numba's own cache directory where one is
set (``NUMBA_CACHE_DIR``), else under ``policies/__pycache__``, else, where that cannot be
written (a read-only install), under the user's cache (``$XDG_CACHE_HOME`` or ``~/.cache``,
``perllm/``). ``make clean`` removes the in-tree ones. Numba's setting is changed only while a
kernel is defined (imports are serialised, so no other definition sees it), and the caller's
own numba functions cache where they would anyway.
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
def sources_digest() -> str:
    """A digest of every file a kernel could compile in."""
    digest = hashlib.sha256()
    for path in [_PHYSICS, *sorted(_POLICIES.glob("*.py"))]:
        digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _writable(directory: Path) -> bool:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(directory, os.W_OK)


def cache_directory(numba_cache_dir: str = "") -> str:
    """Where the kernels of these sources are cached, given numba's own cache directory (empty
    where none is set); see the module docstring."""
    name = f"numba-{sources_digest()}"
    if numba_cache_dir:
        return str(Path(numba_cache_dir) / name)
    in_tree = _POLICIES / "__pycache__" / name
    if _writable(in_tree):
        return str(in_tree)
    user = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return str(user / "perllm" / name)


def kernel(func: F) -> F:
    """``numba.njit(cache=True)``, cached in :func:`cache_directory`."""
    settings = vars(config)  # numba sets its options on the module at run time
    previous = settings["CACHE_DIR"]
    settings["CACHE_DIR"] = cache_directory(str(previous or ""))
    try:
        return cast(F, njit(cache=True)(func))
    finally:
        settings["CACHE_DIR"] = previous
