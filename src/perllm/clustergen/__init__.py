"""Random but realistic edge-cloud clusters, for robustness studies over clusters nobody tuned on.

:func:`generate` draws a cluster from the catalog (:mod:`.draw`, ranges in :mod:`.settings`),
measures its capacity for its own workload (:mod:`.capacity`), sets the arrival rate to
``load x capacity`` and returns a scenario that ``perllm simulate --scenario FILE`` accepts
(:mod:`.generator`). Named families of settings (:mod:`.families`) pick a kind of fleet.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.clustergen.families import FAMILIES, cluster_seed, family_settings
    from perllm.clustergen.generator import GeneratedScenario, generate
    from perllm.clustergen.settings import GeneratorSettings, settings_from

_EXPORTS: dict[str, tuple[str, str]] = {
    "FAMILIES": ("perllm.clustergen.families", "FAMILIES"),
    "cluster_seed": ("perllm.clustergen.families", "cluster_seed"),
    "family_settings": ("perllm.clustergen.families", "family_settings"),
    "GeneratedScenario": ("perllm.clustergen.generator", "GeneratedScenario"),
    "generate": ("perllm.clustergen.generator", "generate"),
    "GeneratorSettings": ("perllm.clustergen.settings", "GeneratorSettings"),
    "settings_from": ("perllm.clustergen.settings", "settings_from"),
}

__all__ = [
    "FAMILIES",
    "GeneratedScenario",
    "GeneratorSettings",
    "cluster_seed",
    "family_settings",
    "generate",
    "settings_from",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
