"""The cluster package sits below both worlds: the gateway never loads the simulator."""

from __future__ import annotations

import subprocess
import sys

import pytest

import perllm.cluster


def _loaded_after(imports: str) -> set[str]:
    code = f"import sys\n{imports}\nprint(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_every_exported_name_resolves() -> None:
    for name in perllm.cluster.__all__:
        assert getattr(perllm.cluster, name) is not None, name


def test_the_gateway_and_the_testing_helpers_do_not_load_the_simulator() -> None:
    loaded = _loaded_after(
        "import perllm.gateway.app, perllm.gateway.cli, perllm.gateway.testbed, perllm.testing\n"
        "from perllm.gateway.cli import add_gateway_commands\n"
        "import perllm.testing as t; t.paper_view(4)"
    )
    assert "perllm.cluster.scenario" in loaded
    assert not {m for m in loaded if m.startswith("perllm.sim")}


@pytest.mark.parametrize(
    ("imports", "forbidden"),
    [
        ("import perllm.profiling, perllm.profiling.run", "perllm.node"),
        ("import perllm.cluster.settings", "perllm.perf"),
    ],
)
def test_lower_layers_do_not_load_higher_ones(imports: str, forbidden: str) -> None:
    loaded = _loaded_after(imports)
    assert not {m for m in loaded if m == forbidden or m.startswith(forbidden + ".")}
