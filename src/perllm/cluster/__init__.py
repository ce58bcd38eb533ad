"""The cluster model, below both worlds: the settings every YAML file is validated with, and the
one way from a description of servers and links to the :class:`~perllm.domain.ServerSpec` and
:class:`~perllm.domain.LinkSpec` that policies see.

The simulator (:mod:`perllm.sim`) and the gateway (:mod:`perllm.gateway`) both import this
package; it imports neither. Layers, bottom up:

- :mod:`~perllm.cluster.settings`: the kebab-case pydantic base of every YAML-facing model and
  the one-line messages of a failed validation (only pydantic, yaml and :mod:`perllm.errors`;
  the policies' settings, workload and cluster generator settings use it too);
- :mod:`~perllm.cluster.parts`: settings shared by scenarios and gateway configs: the catalog
  names (hardware, model: checked once, here), dtype, an explicit power, a link;
- :mod:`~perllm.cluster.profile`: the profile file of a measured server (``perllm profile``
  writes it; the builder reads it, with the one reader);
- :mod:`~perllm.cluster.truth`: how a scenario's servers and links really run, apart from
  their specs (the description; the simulator applies it, :mod:`perllm.sim.truth`);
- :mod:`~perllm.cluster.build`: the one builder: a :class:`ServerDescription` (a scenario
  server group or a gateway backend) becomes a ``ServerSpec``, a link setting a ``LinkSpec``;
  relative ``profile:`` paths are resolved once;
- :mod:`~perllm.cluster.scenario_config` and :mod:`~perllm.cluster.scenario`: the scenario
  YAML, and loading it into a :class:`Cluster` (specs, link dynamics, truth, workload): what
  the simulator runs and the gateway's testbed emulates.

What stays in the worlds: the simulator applies bandwidth dynamics and the truth in its event
engine; the gateway's own settings (URLs, limits, classes) and its live view stay in
:mod:`perllm.gateway`, which turns each backend into a :class:`ServerDescription`.

Names are imported on first use, so that importing :mod:`perllm.cluster.settings` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from perllm.lazy import lazy_exports

if TYPE_CHECKING:
    from perllm.cluster.build import (
        ServerDescription,
        fit_problem,
        link_spec,
        resolve_profile,
        server_spec,
    )
    from perllm.cluster.parts import LinkConfig, PowerConfig
    from perllm.cluster.profile import ProfileFile, read_profile, write_profile
    from perllm.cluster.scenario import Cluster, build, builtin_names, load, parse
    from perllm.cluster.scenario_config import ScenarioConfig
    from perllm.cluster.settings import KebabModel, validation_message, yaml_message
    from perllm.cluster.truth import ClusterTruth, ServerTruth

_EXPORTS: dict[str, tuple[str, str]] = {
    "KebabModel": ("perllm.cluster.settings", "KebabModel"),
    "validation_message": ("perllm.cluster.settings", "validation_message"),
    "yaml_message": ("perllm.cluster.settings", "yaml_message"),
    "LinkConfig": ("perllm.cluster.parts", "LinkConfig"),
    "PowerConfig": ("perllm.cluster.parts", "PowerConfig"),
    "ProfileFile": ("perllm.cluster.profile", "ProfileFile"),
    "read_profile": ("perllm.cluster.profile", "read_profile"),
    "write_profile": ("perllm.cluster.profile", "write_profile"),
    "ClusterTruth": ("perllm.cluster.truth", "ClusterTruth"),
    "ServerTruth": ("perllm.cluster.truth", "ServerTruth"),
    "ServerDescription": ("perllm.cluster.build", "ServerDescription"),
    "server_spec": ("perllm.cluster.build", "server_spec"),
    "link_spec": ("perllm.cluster.build", "link_spec"),
    "fit_problem": ("perllm.cluster.build", "fit_problem"),
    "resolve_profile": ("perllm.cluster.build", "resolve_profile"),
    "ScenarioConfig": ("perllm.cluster.scenario_config", "ScenarioConfig"),
    "Cluster": ("perllm.cluster.scenario", "Cluster"),
    "build": ("perllm.cluster.scenario", "build"),
    "builtin_names": ("perllm.cluster.scenario", "builtin_names"),
    "load": ("perllm.cluster.scenario", "load"),
    "parse": ("perllm.cluster.scenario", "parse"),
}

__all__ = [
    "Cluster",
    "ClusterTruth",
    "KebabModel",
    "LinkConfig",
    "PowerConfig",
    "ProfileFile",
    "ScenarioConfig",
    "ServerDescription",
    "ServerTruth",
    "build",
    "builtin_names",
    "fit_problem",
    "link_spec",
    "load",
    "parse",
    "read_profile",
    "resolve_profile",
    "server_spec",
    "validation_message",
    "write_profile",
    "yaml_message",
]

__getattr__ = lazy_exports(__name__, _EXPORTS)
