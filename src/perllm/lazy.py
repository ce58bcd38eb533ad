"""Package faces whose names are imported on first use, so that ``perllm --help`` stays fast."""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from importlib import import_module
from typing import Any


def lazy_exports(package: str, exports: Mapping[str, tuple[str, str]]) -> Callable[[str], Any]:
    """A module ``__getattr__`` for ``package`` that resolves ``name`` to ``attribute`` of
    ``module`` (``exports[name] = (module, attribute)``) on first use, then caches it."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name not in exports:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        module, attribute = exports[name]
        value = getattr(import_module(module), attribute)
        namespace[name] = value
        return value

    return __getattr__
