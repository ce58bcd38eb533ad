"""Hardware and LLM performance and power models, the built-in catalog and calibration, and
the energy a CPU really draws (:mod:`perllm.perf.energy`: RAPL, else the power model)."""

from perllm.perf.catalog import BYTES_PER_WEIGHT, HARDWARE, MODELS, HardwareProfile, ModelProfile
from perllm.perf.model import Deployment, deployment

__all__ = [
    "BYTES_PER_WEIGHT",
    "HARDWARE",
    "MODELS",
    "Deployment",
    "HardwareProfile",
    "ModelProfile",
    "deployment",
]
