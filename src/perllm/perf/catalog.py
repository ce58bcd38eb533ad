"""Built-in catalog of hardware and LLM profiles, each entry citing its source.

Figures marked *assumption* are not from a datasheet or a measurement; they are the project's
best estimate and may be overridden in a scenario's YAML (``hardware-overrides``).
"""

from __future__ import annotations

from dataclasses import dataclass

MB = 1_000_000
GB = 1_000_000_000


@dataclass(frozen=True, slots=True)
class HardwareProfile:
    """One accelerator or CPU server.

    ``compute_tflops`` is the dense fp16/bf16 tensor throughput for GPUs; for CPUs it is the
    fp32 FMA peak (see each entry). ``mem_efficiency`` and ``compute_efficiency`` are the
    fractions of the peaks that inference kernels reach; ``step_overhead_s`` is the fixed cost of
    one decode step (kernel launches, scheduling). Power: see :class:`perllm.domain.PowerSpec`.
    """

    name: str
    kind: str
    memory_bandwidth_gbps: float
    compute_tflops: float
    memory_gb: float
    idle_w: float
    max_w: float
    batch1_fraction: float
    log2_slope: float
    mem_efficiency: float
    compute_efficiency: float
    step_overhead_s: float
    source: str


@dataclass(frozen=True, slots=True)
class ModelProfile:
    """One LLM architecture. ``kv_bytes_per_token`` is for an fp16 KV cache."""

    name: str
    params_b: float
    layers: int
    hidden: int
    kv_bytes_per_token: float
    source: str
    context_tokens: int | None = None  # the context window, where known


# Bytes per weight by quantisation; llama.cpp Q4_K_M is about 4.85 bits (PROFILES.md).
BYTES_PER_WEIGHT: dict[str, float] = {"fp16": 2.0, "int8": 1.0, "q4": 4.85 / 8}
# Quantised kernels dequantise on the fly and reach a lower share of memory bandwidth.
# Fitted to the TinyChat 4-bit points (RTX 4090, Orin) in PROFILES.md.
QUANT_MEM_EFFICIENCY: dict[str, float] = {"fp16": 1.0, "int8": 0.92, "q4": 0.85}

_GPU_POWER_FIT = (
    "power curve fitted to ML.ENERGY v3 H100 vLLM points (486 W @ batch 8, 610 W @ 64, "
    "691 W @ 256) and the A100 batch-1 point (194 W)"
)

HARDWARE: dict[str, HardwareProfile] = {
    h.name: h
    for h in (
        HardwareProfile(
            name="xeon-silver-4214r",
            kind="cpu",
            memory_bandwidth_gbps=115.2,
            compute_tflops=0.92,
            memory_gb=192.0,
            idle_w=25.0,
            max_w=100.0,
            batch1_fraction=0.80,
            log2_slope=0.05,
            mem_efficiency=0.60,
            compute_efficiency=0.60,
            step_overhead_s=0.002,
            source=(
                "Intel ARK: 6 x DDR4-2400 = 115.2 GB/s per socket, 12 cores, 2.4 GHz, 1 AVX-512 "
                "FMA unit/core (12 x 2.4e9 x 32 FLOP = 0.92 TFLOPS fp32), TDP 100 W. "
                "Assumptions: 192 GB RAM, 25 W package idle, llama.cpp reaches 60% of memory "
                "bandwidth and of FMA peak, a CPU draws 80% of TDP already at batch 1."
            ),
        ),
        HardwareProfile(
            name="a100-40gb",
            kind="gpu",
            memory_bandwidth_gbps=1555.0,
            compute_tflops=312.0,
            memory_gb=40.0,
            idle_w=50.0,
            max_w=400.0,
            batch1_fraction=0.41,
            log2_slope=0.066,
            mem_efficiency=0.80,
            compute_efficiency=0.50,
            step_overhead_s=0.001,
            source=(
                "NVIDIA A100 datasheet (SXM 40 GB: 1,555 GB/s, 312 TFLOPS, 400 W); "
                f"{_GPU_POWER_FIT}; idle 50 W and efficiencies as for the H100 (assumption)."
            ),
        ),
        HardwareProfile(
            name="a100-80gb",
            kind="gpu",
            memory_bandwidth_gbps=2039.0,
            compute_tflops=312.0,
            memory_gb=80.0,
            idle_w=50.0,
            max_w=400.0,
            batch1_fraction=0.41,
            log2_slope=0.066,
            mem_efficiency=0.80,
            compute_efficiency=0.50,
            step_overhead_s=0.001,
            source=(
                "NVIDIA A100 datasheet (SXM 80 GB: 2,039 GB/s, 312 TFLOPS, 400 W); "
                f"{_GPU_POWER_FIT}; idle 50 W (assumption)."
            ),
        ),
        HardwareProfile(
            name="a100-pcie-40gb",
            kind="gpu",
            memory_bandwidth_gbps=1555.0,
            compute_tflops=312.0,
            memory_gb=40.0,
            idle_w=35.0,
            max_w=250.0,
            batch1_fraction=0.41,
            log2_slope=0.066,
            mem_efficiency=0.80,
            compute_efficiency=0.50,
            step_overhead_s=0.001,
            source=(
                f"NVIDIA A100 datasheet (PCIe 40 GB: 1,555 GB/s, 312 TFLOPS, 250 W); "
                f"{_GPU_POWER_FIT}; idle 35 W (assumption)."
            ),
        ),
        HardwareProfile(
            name="h100-sxm",
            kind="gpu",
            memory_bandwidth_gbps=3350.0,
            compute_tflops=989.0,
            memory_gb=80.0,
            idle_w=70.0,
            max_w=700.0,
            batch1_fraction=0.46,
            log2_slope=0.066,
            mem_efficiency=0.80,
            compute_efficiency=0.50,
            step_overhead_s=0.001,
            source=(
                "NVIDIA H100 SXM datasheet (3,350 GB/s, 989 TFLOPS, 700 W); "
                f"{_GPU_POWER_FIT}; idle 70 W (assumption)."
            ),
        ),
        HardwareProfile(
            name="rtx-4090",
            kind="gpu",
            memory_bandwidth_gbps=1008.0,
            compute_tflops=165.0,
            memory_gb=24.0,
            idle_w=20.0,
            max_w=450.0,
            batch1_fraction=0.41,
            log2_slope=0.066,
            mem_efficiency=0.85,
            compute_efficiency=0.50,
            step_overhead_s=0.0004,
            source=(
                "NVIDIA RTX 4090 specs (1,008 GB/s, 165 TFLOPS fp16 with fp32 accumulate, 450 W); "
                "memory efficiency fitted to TinyChat Llama-2-7B fp16 16.17 ms/token "
                f"(mit-han-lab/llm-awq); {_GPU_POWER_FIT}; idle 20 W (assumption)."
            ),
        ),
        HardwareProfile(
            name="rtx-3090",
            kind="gpu",
            memory_bandwidth_gbps=936.0,
            compute_tflops=71.0,
            memory_gb=24.0,
            idle_w=20.0,
            max_w=350.0,
            batch1_fraction=0.41,
            log2_slope=0.066,
            mem_efficiency=0.85,
            compute_efficiency=0.50,
            step_overhead_s=0.0004,
            source=(
                "NVIDIA RTX 3090 specs (936 GB/s, 71 TFLOPS fp16 accumulate, 350 W); "
                f"efficiencies as the RTX 4090 (assumption); {_GPU_POWER_FIT}."
            ),
        ),
        HardwareProfile(
            name="jetson-agx-orin-64gb",
            kind="gpu",
            memory_bandwidth_gbps=204.8,
            compute_tflops=68.75,
            memory_gb=64.0,
            idle_w=7.0,
            max_w=60.0,
            batch1_fraction=0.50,
            log2_slope=0.066,
            mem_efficiency=0.78,
            compute_efficiency=0.50,
            step_overhead_s=0.0005,
            source=(
                "NVIDIA Jetson AGX Orin 64 GB datasheet (204.8 GB/s, 275 INT8 TOPS sparse, "
                "15-60 W modes). Assumptions: dense fp16 = 275 / 4 TFLOPS, 7 W idle; memory "
                "efficiency fitted to TinyChat Llama-2-7B fp16 86.80 ms/token "
                "(mit-han-lab/llm-awq)."
            ),
        ),
    )
}

MODELS: dict[str, ModelProfile] = {
    m.name: m
    for m in (
        ModelProfile(
            name="chatglm-6b",
            params_b=6.2,
            layers=28,
            hidden=4096,
            kv_bytes_per_token=0.44 * MB,
            source="THUDM/chatglm-6b model card (6.2 B, 28 x 4096); KV per PROFILES.md",
            context_tokens=2048,
        ),
        ModelProfile(
            name="llama-2-7b",
            params_b=6.74,
            layers=32,
            hidden=4096,
            kv_bytes_per_token=0.5 * MB,
            source="Llama 2 paper (Touvron et al. 2023): 6.74 B, 32 x 4096; KV 2x32x4096x2 B",
            context_tokens=4096,
        ),
        ModelProfile(
            name="llama-3.1-8b",
            params_b=8.03,
            layers=32,
            hidden=4096,
            kv_bytes_per_token=0.131 * MB,
            source="Llama 3.1 model card: 8.03 B, 32 layers, 8 KV heads x 128 (GQA)",
            context_tokens=131072,
        ),
        ModelProfile(
            name="llama-2-13b",
            params_b=13.0,
            layers=40,
            hidden=5120,
            kv_bytes_per_token=0.78 * MB,
            source="Llama 2 paper: 13.0 B, 40 x 5120; KV 2x40x5120x2 B",
            context_tokens=4096,
        ),
        ModelProfile(
            name="vicuna-33b",
            params_b=32.5,
            layers=60,
            hidden=6656,
            kv_bytes_per_token=1.52 * MB,
            source="LLaMA paper (33B: 32.5 B, 60 x 6656); KV 2x60x6656x2 B",
            context_tokens=2048,
        ),
    )
}
