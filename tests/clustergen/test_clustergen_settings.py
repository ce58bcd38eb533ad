"""Generator settings: the defaults, and one line naming the field for infeasible ranges."""

from __future__ import annotations

from typing import Any

import pytest

from perllm.clustergen.hardware import CLOUD, EDGE, MIN_KV_TOKENS, candidates
from perllm.clustergen.settings import GeneratorSettings, settings_from
from perllm.errors import InputError
from perllm.perf.model import deployment


def test_defaults_are_the_documented_envelope() -> None:
    s = settings_from({})
    assert s == GeneratorSettings()
    assert s.servers == (2, 40)
    assert s.cloud_servers == (0, 3)
    assert s.gamma_cv == (1.0, 4.0)
    assert s.speed_mismatch == 0.4


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"servers": [50, 40]}, "field 'servers': low 50 > high 40"),
        ({"servers": [0, 40]}, "field 'servers': must lie within [1, 10000]"),
        ({"cloud-servers": [3, 3], "servers": [2, 3]}, "field 'cloud-servers': at least 3"),
        ({"fluctuation": [0, 2]}, "field 'fluctuation': must lie within"),
        ({"edge-bandwidth-mbps": [100, 10]}, "field 'edge-bandwidth-mbps': low 100 > high 10"),
        ({"gamma-cv": [4, 1]}, "field 'gamma-cv'"),
        ({"edge-kinds": {"cpu": 0}}, "field 'edge-kinds': weights must be >= 0"),
        ({"edge-kinds": {"tpu": 1}}, "field 'edge-kinds.tpu.[key]'"),
        ({"class-mixes": {"personalized": -1}}, "field 'class-mixes'"),
        ({"speed-mismatch": 1.0}, "field 'speed-mismatch'"),
        ({"load": 0}, "field 'load'"),
        ({"servers": "many"}, "field 'servers'"),
        ({"nonsense": 1}, "field 'nonsense'"),
        ({"requests": 500, "max-requests": 100}, "field 'max-requests': 100 is less than"),
    ],
)
def test_infeasible_settings_name_the_field(changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(InputError) as info:
        settings_from(changes, "--set")
    message = str(info.value)
    assert message.startswith("--set: ")
    assert expected in message
    assert "\n" not in message


@pytest.mark.parametrize("kind", [*EDGE.values(), CLOUD])
def test_every_kind_has_deployments_that_fit(kind: Any) -> None:
    options = candidates(kind)
    assert options
    for hardware, model, dtype in options:
        dep = deployment(hardware, model, dtype)
        assert dep.kv_capacity_tokens() >= MIN_KV_TOKENS
