"""Each package's face: a curated ``__all__`` whose names all resolve, imported on first use, and
the policies' face never reaching into the simulator or the gateway."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import pytest

FACES = ("perllm", "perllm.policies", "perllm.sim", "perllm.experiments", "perllm.gateway")


def _modules_after(code: str) -> set[str]:
    """The modules loaded in a fresh interpreter after running ``code``."""
    script = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout))


@pytest.mark.parametrize("face", FACES)
def test_every_public_name_resolves(face: str) -> None:
    module = importlib.import_module(face)
    assert module.__doc__
    assert len(set(module.__all__)) == len(module.__all__)
    for name in module.__all__:
        assert getattr(module, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nothing_here'"):
        getattr(module, "nothing_here")  # noqa: B009 - the lazy __getattr__ under test


def test_importing_the_faces_is_light() -> None:
    loaded = _modules_after("import perllm.policies, perllm.sim, perllm.experiments")
    heavy = {"numba", "matplotlib", "ray", "uvicorn", "starlette", "perllm.policies.cs_ucb"}
    assert not loaded & heavy


def test_the_policies_face_reaches_neither_the_simulator_nor_the_gateway() -> None:
    code = "import perllm.policies as p\nfor name in p.__all__: getattr(p, name)"
    loaded = _modules_after(code)
    assert "perllm.policies.cs_ucb" in loaded
    outside = sorted(
        m for m in loaded if m.startswith(("perllm.sim", "perllm.gateway", "perllm.experiments"))
    )
    assert outside == []
