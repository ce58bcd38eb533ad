"""Bring-your-own policy: a tiny package, installed by pip in the test, registers a policy under
the ``perllm.policies`` entry-point group; the command line and the gateway use it unchanged."""

from __future__ import annotations

import importlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from perllm.cluster.scenario import load as load_scenario
from perllm.errors import InputError
from perllm.gateway import create_app
from perllm.policies.registry import make_policy, plugins

PLUGIN = '''
from typing import ClassVar

from pydantic import Field

from perllm import Decision, PolicyConfig, PolicyEntry, StatelessPolicy


class PinConfig(PolicyConfig):
    server: int = Field(0, ge=0)


class PinPolicy(StatelessPolicy):
    """Every request to one server (by index)."""

    name: ClassVar[str] = "pin"

    def __init__(self, config: PinConfig, seed: int) -> None:
        self.server = config.server

    def select(self, request, view):
        return Decision(server=min(self.server, len(view.servers) - 1))


ENTRY = PolicyEntry("pin", "every request to one server", PinConfig, PinPolicy)
BROKEN = 42
'''


def _install(tmp: Path, entry_points: str) -> Path:
    """pip-install a package ``pin_policy`` with these entry points into ``tmp/site``."""
    source = tmp / "src"
    (source / "pin_policy").mkdir(parents=True)
    (source / "pin_policy" / "__init__.py").write_text(PLUGIN)
    (source / "pyproject.toml").write_text(
        textwrap.dedent(
            """\
            [build-system]
            requires = ["setuptools"]
            build-backend = "setuptools.build_meta"

            [project]
            name = "pin-policy"
            version = "0.1"

            [project.entry-points."perllm.policies"]
            """
        )
        + entry_points
    )
    site = tmp / "site"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "--target",
            str(site),
            str(source),
        ],
        check=True,
        capture_output=True,
    )
    return site


@pytest.fixture
def installed(tmp_path: Path) -> Iterator[Path]:
    """The plugin installed and visible to this process (and its children, via PYTHONPATH)."""
    site = _install(tmp_path, 'pin = "pin_policy:ENTRY"\n')
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugins.cache_clear()
    yield site
    sys.path.remove(str(site))
    sys.modules.pop("pin_policy", None)
    plugins.cache_clear()


def _perllm(site: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), *sys.path])}
    command = [sys.executable, "-m", "perllm.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


def test_simulate_and_policies_list_use_an_installed_plugin(installed: Path) -> None:
    listed = _perllm(installed, "policies")
    assert listed.returncode == 0, listed.stderr
    assert "pin (plugin)" in listed.stdout
    out = installed.parent / "run"
    ran = _perllm(
        installed,
        "simulate",
        "--scenario",
        "tiny",
        "--policy",
        "pin",
        "--param",
        "server=1",
        "--requests",
        "60",
        "--json",
        "--out",
        str(out),
    )
    assert ran.returncode == 0, ran.stderr
    assert json.loads(ran.stdout)["policy"] == "pin"
    header, *rows = (out / "records.csv").read_text().splitlines()
    column = header.split(",").index("server")
    second = load_scenario("tiny").servers[1].name
    assert {row.split(",")[column] for row in rows} == {second}


@pytest.mark.slow
def test_reproduce_runs_an_installed_plugin_beside_cs_ucb(installed: Path) -> None:
    out = installed.parent / "grid"
    ran = _perllm(
        installed,
        "reproduce",
        "--quick",
        "--seeds",
        "1",
        "--requests",
        "30",
        "--policies",
        "cs-ucb,pin",
        "--out",
        str(out),
    )
    assert ran.returncode == 0, ran.stderr
    rows = (out / "results.csv").read_text().splitlines()
    column = rows[0].split(",").index("policy")
    assert {row.split(",")[column] for row in rows[1:]} == {"cs-ucb", "pin"}


def test_the_gateway_routes_with_an_installed_plugin(installed: Path, serve: Any, kit: Any) -> None:
    backends = [serve(kit.emulator(kit.EDGE, time_scale=0.01)) for _ in range(2)]
    entries = [kit.backend(f"b{i}", b.url) for i, b in enumerate(backends)]
    config = kit.gateway_config(entries, policy={"type": "pin", "params": {"server": 1}})
    policy = make_policy("pin", {"server": 1}, live=True)
    gateway = serve(create_app(config, policy))
    body = {"model": "m", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        answer = httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=30)
        assert answer.status_code == 200
    stats = httpx.get(gateway.url + "/stats").json()
    assert stats["summary"]["per_server"]["b1"]["requests"] == 3
    assert stats["summary"]["per_server"].get("b0", {}).get("requests", 0) == 0


def test_a_bad_plugin_is_named_not_skipped(tmp_path: Path) -> None:
    site = _install(tmp_path, 'pin = "pin_policy:BROKEN"\n')
    sys.path.insert(0, str(site))
    importlib.invalidate_caches()
    plugins.cache_clear()
    try:
        with pytest.raises(
            InputError, match=r"policy plugin 'pin' \(pin_policy:BROKEN\): is a int"
        ):
            make_policy("pin")
    finally:
        sys.path.remove(str(site))
        sys.modules.pop("pin_policy", None)
        plugins.cache_clear()
