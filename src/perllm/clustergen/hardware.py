"""Which deployments the cluster generator may draw, per kind of server.

Every hardware, model and dtype comes from the built-in catalog (:mod:`perllm.perf.catalog`,
which cites its sources). A deployment is kept only if its weights fit in the device's memory
with room for at least :data:`MIN_KV_TOKENS` tokens of KV cache (a server that cannot hold a
couple of long requests is not one anybody deploys). Batch limits are assumptions in the range
serving stacks use: llama.cpp on a CPU serves a few sequences; vLLM on a GPU tens.
"""

from __future__ import annotations

from dataclasses import dataclass

from perllm.perf.model import Deployment, deployment

__all__ = ["CLOUD", "EDGE", "MIN_KV_TOKENS", "KindSpec", "candidates"]

MIN_KV_TOKENS = 8192

# Edge-sized models (6-13 B) and cloud-sized ones (8-33 B), from the catalog.
_EDGE_MODELS = ("chatglm-6b", "llama-2-7b", "llama-3.1-8b", "llama-2-13b")
_CLOUD_MODELS = ("llama-3.1-8b", "llama-2-13b", "vicuna-33b")


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One kind of server: its hardware, the models and dtypes it runs, its batch limits."""

    hardware: tuple[str, ...]
    models: tuple[str, ...]
    dtypes: tuple[str, ...]
    max_batch: tuple[int, ...]


EDGE: dict[str, KindSpec] = {
    # llama.cpp on a Xeon: quantised weights, a few sequences at a time.
    "cpu": KindSpec(("xeon-silver-4214r",), _EDGE_MODELS, ("q4", "int8"), (1, 2, 4)),
    # Jetson AGX Orin 64 GB: TensorRT-LLM / llama.cpp, small batches.
    "jetson": KindSpec(("jetson-agx-orin-64gb",), _EDGE_MODELS, ("q4", "int8", "fp16"), (4, 8)),
    # Consumer GPUs in an edge box (vLLM or TinyChat).
    "consumer-gpu": KindSpec(
        ("rtx-3090", "rtx-4090"), _EDGE_MODELS, ("q4", "int8", "fp16"), (8, 16, 32)
    ),
    # A data-center GPU at the edge (a PCIe A100 in an edge rack, or an SXM one).
    "datacenter-gpu": KindSpec(
        ("a100-pcie-40gb", "a100-40gb"), _EDGE_MODELS, ("int8", "fp16"), (16, 32, 48)
    ),
}

CLOUD = KindSpec(
    ("a100-40gb", "a100-80gb", "h100-sxm"), _CLOUD_MODELS, ("int8", "fp16"), (32, 48, 64)
)


def _fits(dep: Deployment) -> bool:
    return dep.kv_capacity_tokens() >= MIN_KV_TOKENS


def candidates(kind: KindSpec) -> list[tuple[str, str, str]]:
    """Every ``(hardware, model, dtype)`` of ``kind`` that fits, in a fixed order.

    Parameters
    ----------
    kind
        One of :data:`EDGE`'s values or :data:`CLOUD`.

    Returns
    -------
    list of tuple
        Non-empty for every built-in kind (checked by the tests).
    """
    return [
        (hw, model, dtype)
        for hw in kind.hardware
        for model in kind.models
        for dtype in kind.dtypes
        if _fits(deployment(hw, model, dtype))
    ]
