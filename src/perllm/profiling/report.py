"""Show a profile: the measured points beside the fitted curve (a rich table) and a PNG."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from perllm.domain import ServerPerf
from perllm.profiling.measure import Measurements

__all__ = ["plot_profile", "print_profile"]


def print_profile(perf: ServerPerf, data: Measurements, console: Console | None = None) -> None:
    """Print measured and fitted times to first token and per output token."""
    console = console or Console()
    prefill = Table(title="time to first token (ms) against prompt length")
    for column in ("prompt tokens", "measured", "fitted", "error"):
        prefill.add_column(column, justify="right")
    for p in sorted(data.prefill, key=lambda p: p.prompt_tokens):
        fitted = perf.prefill_s(p.prompt_tokens)
        prefill.add_row(
            str(p.prompt_tokens), f"{p.ttft_s * 1e3:.1f}", f"{fitted * 1e3:.1f}",
            f"{fitted / p.ttft_s - 1:+.1%}",
        )  # fmt: skip
    decode = Table(title="time per output token (ms) against concurrent streams")
    for column in ("streams", "batch", "kv tokens", "measured", "fitted", "error"):
        decode.add_column(column, justify="right")
    for d in sorted(data.decode, key=lambda d: (d.concurrency, d.kv_tokens)):
        fitted = perf.step_s(max(1, round(d.batch)), d.kv_tokens)
        decode.add_row(
            str(d.concurrency), f"{d.batch:.2f}", f"{d.kv_tokens:.0f}", f"{d.tpot_s * 1e3:.2f}",
            f"{fitted * 1e3:.2f}", f"{fitted / d.tpot_s - 1:+.1%}",
        )  # fmt: skip
    console.print(prefill)
    console.print(decode)


def plot_profile(perf: ServerPerf, data: Measurements, path: Path, title: str) -> None:
    """Save a two-panel PNG: TTFT against prompt length, TPOT against concurrent streams."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        n = np.array([p.prompt_tokens for p in data.prefill], dtype=float)
        left.scatter(n, [p.ttft_s * 1e3 for p in data.prefill], label="measured")
        grid = np.linspace(0.0, max(n.max(), 1.0) * 1.05, 50)
        left.plot(grid, [perf.prefill_s(int(x)) * 1e3 for x in grid], "r-", label="fitted")
        left.set(xlabel="prompt tokens", ylabel="time to first token (ms)", title="prefill")
        left.legend()
        conc = np.array([d.concurrency for d in data.decode], dtype=float)
        tpot = np.array([d.tpot_s * 1e3 for d in data.decode])
        fitted = [perf.step_s(max(1, round(d.batch)), d.kv_tokens) * 1e3 for d in data.decode]
        right.scatter(conc, tpot, label="measured")
        right.scatter(conc, fitted, marker="x", color="r", label="fitted")
        right.set(xlabel="concurrent streams", ylabel="time per output token (ms)", title="decode")
        right.set_xticks(sorted(set(conc.tolist())))
        right.legend()
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    finally:
        plt.close(fig)
