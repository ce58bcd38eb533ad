"""LLM inference performance from hardware and model numbers (a roofline model).

For a model of ``P`` parameters stored at ``q`` bytes per weight on hardware with memory
bandwidth ``B`` (reached at efficiency ``e_m``, times a quantisation factor ``e_q``) and tensor
throughput ``F`` (reached at efficiency ``e_c``):

- one decode step reads every weight once and the whole KV cache:
  ``t_mem = P q / (B e_m e_q) + kv_tokens * kv_bytes / (B e_m)``;
- and does ``2 P`` FLOPs per sequence: ``t_compute = batch * 2 P / (F e_c)``;
- ``t_step = overhead + max(t_compute, t_mem)``;
- prefill of ``n`` tokens is compute-bound:
  ``t_prefill = t_weights + overhead + n * 2 P / (F e_c)``.
"""

from __future__ import annotations

from dataclasses import dataclass

from perllm.domain import PowerSpec, ServerPerf
from perllm.perf.catalog import (
    BYTES_PER_WEIGHT,
    GB,
    HARDWARE,
    MODELS,
    QUANT_MEM_EFFICIENCY,
    HardwareProfile,
    ModelProfile,
)

# Memory kept free for activations and the runtime, as a fraction of device memory (assumption,
# in line with vLLM's default gpu_memory_utilization of 0.9).
MEMORY_RESERVE_FRACTION = 0.10


@dataclass(frozen=True, slots=True)
class Deployment:
    """A model at a quantisation on a piece of hardware."""

    hardware: HardwareProfile
    model: ModelProfile
    dtype: str

    @property
    def weight_bytes(self) -> float:
        return self.model.params_b * 1e9 * BYTES_PER_WEIGHT[self.dtype]

    def perf(self) -> ServerPerf:
        """The performance coefficients of this deployment."""
        hw = self.hardware
        bandwidth = hw.memory_bandwidth_gbps * GB * hw.mem_efficiency
        weights_s = self.weight_bytes / (bandwidth * QUANT_MEM_EFFICIENCY[self.dtype])
        flops_per_token = 2.0 * self.model.params_b * 1e9
        compute_s = flops_per_token / (hw.compute_tflops * 1e12 * hw.compute_efficiency)
        return ServerPerf(
            prefill_fixed_s=weights_s + hw.step_overhead_s,
            prefill_s_per_token=compute_s,
            step_overhead_s=hw.step_overhead_s,
            step_weights_s=weights_s,
            step_s_per_kv_token=self.model.kv_bytes_per_token / bandwidth,
            step_compute_s_per_seq=compute_s,
        )

    def power(self) -> PowerSpec:
        hw = self.hardware
        return PowerSpec(
            idle_w=hw.idle_w,
            max_w=hw.max_w,
            batch1_fraction=hw.batch1_fraction,
            log2_slope=hw.log2_slope,
        )

    def kv_capacity_tokens(self) -> int:
        """KV-cache tokens that fit beside the weights."""
        free = self.hardware.memory_gb * GB * (1 - MEMORY_RESERVE_FRACTION) - self.weight_bytes
        return max(0, int(free // self.model.kv_bytes_per_token))


def deployment(hardware: str, model: str, dtype: str) -> Deployment:
    """Look up a deployment in the built-in catalog (``KeyError`` names what is unknown)."""
    if hardware not in HARDWARE:
        raise KeyError(f"unknown hardware {hardware!r}; known: {', '.join(sorted(HARDWARE))}")
    if model not in MODELS:
        raise KeyError(f"unknown model {model!r}; known: {', '.join(sorted(MODELS))}")
    if dtype not in BYTES_PER_WEIGHT:
        raise KeyError(f"unknown dtype {dtype!r}; known: {', '.join(BYTES_PER_WEIGHT)}")
    return Deployment(HARDWARE[hardware], MODELS[model], dtype)
