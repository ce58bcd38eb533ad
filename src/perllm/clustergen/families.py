"""Cluster families: named presets of generator settings, each a kind of fleet to test on.

A family is a set of :class:`~perllm.clustergen.settings.GeneratorSettings` overrides
(kebab-case keys, as ``--set`` takes them); :func:`family_settings` applies a family, then any
further overrides on top, and validates the result. Edge-kind weights keep the ``mixed``
defaults' relative weights for the kinds a family allows.

- ``mixed``: the generator's defaults (CPU, Jetson, consumer-GPU and data-center-GPU edges,
  0-3 cloud servers, so some clusters are edge-only);
- ``gpu-edge``: consumer or workstation GPU edges (RTX 3090 / 4090) and Jetson AGX Orin boxes,
  beside 1-3 data-center-GPU cloud servers;
- ``gpu-only``: every server a GPU: consumer-GPU and data-center-GPU edges, 1-3 cloud GPUs.

Each family draws its clusters from its own seeds: :func:`cluster_seed` offsets a family's
seeds by ``FAMILY_SEED_STRIDE`` times its index in :data:`FAMILIES`, so two families never
share a seed (nor a cluster id in a results table), and a family draws the same clusters
whether it runs alone or beside the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from perllm.clustergen.settings import GeneratorSettings, settings_from
from perllm.errors import InputError

__all__ = [
    "FAMILIES",
    "FAMILY_SEED_STRIDE",
    "cluster_seed",
    "family_overrides",
    "family_settings",
]

FAMILIES: dict[str, dict[str, Any]] = {
    "mixed": {},
    "gpu-edge": {
        "edge-kinds": {"consumer-gpu": 1.0, "jetson": 1.0},
        "cloud-servers": [1, 3],
    },
    "gpu-only": {
        "edge-kinds": {"consumer-gpu": 1.0, "datacenter-gpu": 0.5},
        "cloud-servers": [1, 3],
    },
}
FAMILY_SEED_STRIDE = 100_000
# The robustness benchmark's run length, as generator settings: at least 1,000 requests and at
# least twice the cluster's concurrent slots, at most 2,000 (short runs, mostly cold starts).
SHORT_RUNS: dict[str, Any] = {"requests": 1000, "steady-multiple": 2.0, "max-requests": 2000}


def _check(family: str) -> None:
    if family not in FAMILIES:
        raise InputError(f"--family: unknown family {family!r}; known: {', '.join(FAMILIES)}, all")


def family_overrides(family: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The family's settings with ``overrides`` on top (kebab-case keys, not yet validated)."""
    _check(family)
    return {**FAMILIES[family], **(overrides or {})}


def family_settings(
    family: str, overrides: Mapping[str, Any] | None = None, source: str = "--set"
) -> GeneratorSettings:
    """The validated generator settings of ``family`` with ``overrides`` on top.

    Raises
    ------
    InputError
        An unknown family, or overrides the settings reject (one line).
    """
    return settings_from(family_overrides(family, overrides), source)


def cluster_seed(family: str, seed: int) -> int:
    """The generator seed of ``family``'s cluster number ``seed`` (``0 <= seed`` and
    ``seed < FAMILY_SEED_STRIDE``)."""
    _check(family)
    if not 0 <= seed < FAMILY_SEED_STRIDE:
        raise InputError(
            f"family {family}: a cluster number must lie in [0, {FAMILY_SEED_STRIDE}), got {seed}"
        )
    return list(FAMILIES).index(family) * FAMILY_SEED_STRIDE + seed
