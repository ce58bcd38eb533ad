"""``perllm profile`` against an emulated server on loopback, and its one-line errors."""

from __future__ import annotations

import socket
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import astuple
from pathlib import Path

import pytest
import uvicorn

from perllm.cli import _Parser
from perllm.cluster.profile import read_profile
from perllm.emulator.app import create_emulator_app
from perllm.errors import PerllmError
from perllm.node.cli import add_node_commands


def perllm(argv: Sequence[str]) -> int:
    """Run the node/profile subcommands the way ``perllm.cli.main`` does."""
    parser = _Parser(prog="perllm")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    add_node_commands(sub)
    try:
        args = parser.parse_args(argv)
        result: int = args.func(args)
        return result
    except PerllmError as err:
        print(f"perllm: {err}", file=sys.stderr)
        return 2


@pytest.fixture
def emulated() -> Iterator[str]:
    """An emulated batching server (fast: time scale 0.05) on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    app = create_emulator_app("rtx-3090:llama-2-7b:q4", time_scale=0.05, max_batch=8)
    server = uvicorn.Server(uvicorn.Config(app, log_level="error", lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10.0
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    server.should_exit = True
    thread.join(timeout=10.0)
    sock.close()


def test_profile_writes_a_loadable_profile_table_and_plot(
    emulated: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "emu.yaml"
    argv = ["profile", "--endpoint", emulated + "/v1", "--out", str(out), "--prompt-lengths",
            "16,64", "--concurrency", "1,2", "--repeats", "1", "--prefill-tokens", "4",
            "--decode-tokens", "8", "--hardware", "rtx-3090"]  # fmt: skip
    assert perllm(argv) == 0
    printed = capsys.readouterr().out
    assert "time to first token" in printed and "time per output token" in printed
    profile = read_profile(out)
    assert profile.model == "llama-2-7b"
    assert min(astuple(profile.server_perf())) >= 0.0
    assert profile.power is not None
    doc = out.read_text()
    assert "energy:" in doc and ("estimated" in doc or "measured (RAPL)" in doc)
    assert out.with_suffix(".png").stat().st_size > 0


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--endpoint", "http://127.0.0.1:9"], "--endpoint http://127.0.0.1:9"),
        (["--endpoint", "ftp://x"], "expected an http(s) URL"),
        (["--endpoint", "http://x", "--prompt-lengths", "a,b"], "comma-separated integers"),
        (["--endpoint", "http://x", "--idle-w", "3"], "give both or neither"),
        (["--endpoint", "http://x", "--hardware", "abacus"], "unknown 'abacus'"),
    ],
)
def test_profile_errors_are_one_line_exit_2(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert perllm(["profile", "--out", str(tmp_path / "p.yaml"), *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
