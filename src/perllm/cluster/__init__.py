"""The cluster: the settings models every YAML file is validated with, and the one way from a
description of servers and links to the :class:`~perllm.domain.ServerSpec` and
:class:`~perllm.domain.LinkSpec` that policies see.

- :mod:`perllm.cluster.settings`: the kebab-case pydantic base of every YAML-facing model and
  the one-line messages of a failed validation (the bottom layer: pydantic, yaml and
  :mod:`perllm.errors` only).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.cluster.settings import KebabModel, validation_message, yaml_message

_EXPORTS: dict[str, tuple[str, str]] = {
    "KebabModel": ("perllm.cluster.settings", "KebabModel"),
    "validation_message": ("perllm.cluster.settings", "validation_message"),
    "yaml_message": ("perllm.cluster.settings", "yaml_message"),
}

__all__ = ["KebabModel", "validation_message", "yaml_message"]

__getattr__ = lazy_exports(__name__, _EXPORTS)
