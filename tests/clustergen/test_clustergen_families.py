"""Cluster families: each preset draws the hardware it names, overrides apply on top, and
the families' seeds never meet."""

from __future__ import annotations

import pytest

from perllm.clustergen.draw import draw_scenario
from perllm.clustergen.families import (
    FAMILIES,
    FAMILY_SEED_STRIDE,
    cluster_seed,
    family_overrides,
    family_settings,
)
from perllm.clustergen.hardware import CLOUD, EDGE
from perllm.errors import InputError

SEEDS = range(30)


def _hardware(*kinds: str) -> set[str]:
    return {hw for kind in kinds for hw in EDGE[kind].hardware}


def _drawn(family: str) -> tuple[set[str], set[str], int]:
    """The edge and cloud hardware of the family's first clusters, and their fewest clouds."""
    settings = family_settings(family)
    edges: set[str] = set()
    clouds: set[str] = set()
    fewest = 10**6
    for seed in SEEDS:
        servers = draw_scenario(cluster_seed(family, seed), settings).data["servers"]
        edges |= {s["hardware"] for s in servers if s["tier"] == "edge"}
        clouds |= {s["hardware"] for s in servers if s["tier"] == "cloud"}
        fewest = min(fewest, sum(s["tier"] == "cloud" for s in servers))
    return edges, clouds, fewest


def test_gpu_edge_draws_consumer_gpus_and_jetsons_beside_cloud_gpus() -> None:
    edges, clouds, fewest = _drawn("gpu-edge")
    assert edges <= _hardware("consumer-gpu", "jetson")
    assert edges & set(EDGE["jetson"].hardware) and edges & set(EDGE["consumer-gpu"].hardware)
    assert clouds <= set(CLOUD.hardware) and fewest >= 1


def test_gpu_only_draws_only_gpus() -> None:
    edges, clouds, fewest = _drawn("gpu-only")
    assert edges <= _hardware("consumer-gpu", "datacenter-gpu")
    assert edges & set(EDGE["datacenter-gpu"].hardware)
    assert clouds <= set(CLOUD.hardware) and fewest >= 1


def test_mixed_is_the_generator_defaults() -> None:
    assert family_settings("mixed") == family_settings("mixed", {})
    assert family_overrides("mixed") == {}
    edges, _, fewest = _drawn("mixed")
    assert edges & set(EDGE["cpu"].hardware) and fewest == 0


def test_overrides_apply_on_top_of_the_family() -> None:
    settings = family_settings("gpu-only", {"cloud-servers": [2, 2], "servers": [4, 6]})
    assert settings.cloud_servers == (2, 2) and settings.servers == (4, 6)
    assert set(settings.edge_kinds) == {"consumer-gpu", "datacenter-gpu"}
    with pytest.raises(InputError, match="cloud-servers"):
        family_settings("gpu-edge", {"cloud-servers": [5, 1]})


def test_unknown_families_and_seeds_fail_with_one_line() -> None:
    with pytest.raises(InputError, match=r"unknown family 'cpu-only'; known: mixed, gpu-edge"):
        family_settings("cpu-only")
    with pytest.raises(InputError, match="a cluster number must lie in"):
        cluster_seed("mixed", FAMILY_SEED_STRIDE)


def test_family_seeds_never_meet() -> None:
    seeds = [cluster_seed(f, n) for f in FAMILIES for n in (0, 1, FAMILY_SEED_STRIDE - 1)]
    assert len(set(seeds)) == len(seeds)
    assert cluster_seed("mixed", 7) == 7  # mixed keeps the generator's own seeds
