"""Public measurements the performance and power models must reproduce (within 15%).

Each point names its source in PROFILES.md. The ML.ENERGY v3 points do not state the mean
context length held in the KV cache; we assume 1,500 tokens per sequence (an assumption: it is
the one free parameter of the H100 points).
"""

from __future__ import annotations

from dataclasses import dataclass

from perllm.perf.model import deployment

ML_ENERGY_CONTEXT_TOKENS = 1500


@dataclass(frozen=True, slots=True)
class CalibrationPoint:
    """A measured time per output token (or power) at a batch size."""

    hardware: str
    model: str
    dtype: str
    batch: int
    measured: float
    quantity: str  # "step_s" or "power_w"
    context_tokens: int
    source: str

    def predicted(self) -> float:
        dep = deployment(self.hardware, self.model, self.dtype)
        if self.quantity == "power_w":
            return dep.power().busy_w(self.batch)
        return dep.perf().step_s(self.batch, self.batch * self.context_tokens)

    def relative_error(self) -> float:
        return self.predicted() / self.measured - 1.0


_TINYCHAT = "mit-han-lab/llm-awq TinyChat README, Llama-2-7B, batch 1"
_MLE = "ML.ENERGY v3, Llama-3.1-8B bf16 on vLLM"

CALIBRATION_POINTS: tuple[CalibrationPoint, ...] = (
    CalibrationPoint("rtx-4090", "llama-2-7b", "fp16", 1, 0.01617, "step_s", 256, _TINYCHAT),
    CalibrationPoint("rtx-4090", "llama-2-7b", "q4", 1, 0.00602, "step_s", 256, _TINYCHAT),
    CalibrationPoint(
        "jetson-agx-orin-64gb", "llama-2-7b", "fp16", 1, 0.08680, "step_s", 256, _TINYCHAT
    ),
    CalibrationPoint(
        "jetson-agx-orin-64gb", "llama-2-7b", "q4", 1, 0.03214, "step_s", 256, _TINYCHAT
    ),
    CalibrationPoint(
        "h100-sxm", "llama-3.1-8b", "fp16", 8, 0.0073, "step_s", ML_ENERGY_CONTEXT_TOKENS, _MLE
    ),
    CalibrationPoint(
        "h100-sxm", "llama-3.1-8b", "fp16", 64, 64 / 5147, "step_s", ML_ENERGY_CONTEXT_TOKENS, _MLE
    ),
    CalibrationPoint(
        "h100-sxm", "llama-3.1-8b", "fp16", 256, 0.0261, "step_s", ML_ENERGY_CONTEXT_TOKENS, _MLE
    ),
    CalibrationPoint("h100-sxm", "llama-3.1-8b", "fp16", 8, 486.0, "power_w", 0, _MLE),
    CalibrationPoint("h100-sxm", "llama-3.1-8b", "fp16", 64, 610.0, "power_w", 0, _MLE),
    CalibrationPoint("h100-sxm", "llama-3.1-8b", "fp16", 256, 691.0, "power_w", 0, _MLE),
    CalibrationPoint(
        "a100-80gb",
        "llama-2-7b",
        "fp16",
        1,
        194.0,
        "power_w",
        0,
        "ML.ENERGY leaderboard, Llama-2-7B-chat, A100, batch 1 (1,829 J / 420 tokens, 44.5 tok/s)",
    ),
)


def table_markdown() -> str:
    """The calibration points as a Markdown table: measured, predicted, error."""
    lines = [
        "| hardware | model | dtype | batch | quantity | measured | predicted | error |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for point in CALIBRATION_POINTS:
        scale, unit = (1000.0, "ms/token") if point.quantity == "step_s" else (1.0, "W")
        lines.append(
            f"| {point.hardware} | {point.model} | {point.dtype} | {point.batch} | {unit} "
            f"| {point.measured * scale:.2f} | {point.predicted() * scale:.2f} "
            f"| {point.relative_error():+.1%} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    print(table_markdown())
