"""The physical formulas of the model, each written once as a plain scalar function.

The domain types (:class:`~perllm.domain.PowerSpec`, :class:`~perllm.domain.ServerPerf`), the
workload generator, the simulator, the gateway's feedback and the policies' compiled estimate
kernel (:mod:`perllm.policies.estimates`, which compiles these same functions with numba) all
call them, so a formula changed here changes everywhere. They take and return plain numbers and
use only arithmetic, ``min``/``max``, :mod:`math` and each other: what numba compiles unchanged
(this module does not import numba; the kernel's module registers the functions with it). The
order of the operations is part of each formula: simulations are reproducible byte for byte.

Sizes on the wire: ``BYTES_PER_TOKEN`` bytes per token of text and ``RESPONSE_OVERHEAD_BYTES``
of headers and JSON envelope per response.
"""

from __future__ import annotations

import math
from typing import Any, overload

import numpy as np
import numpy.typing as npt

__all__ = [
    "BANDWIDTH_EWMA",
    "BYTES_PER_TOKEN",
    "CHARS_PER_TOKEN",
    "RESPONSE_OVERHEAD_BYTES",
    "bandwidth_estimate",
    "batch_share_j",
    "busy_power_w",
    "prefill_s",
    "request_bytes",
    "response_bytes",
    "step_roofline_s",
    "step_s",
    "transfer_s",
    "transmission_j",
    "wire_s",
]

CHARS_PER_TOKEN = 4
"""Characters of text per token (English averages about four): how the gateway and the emulator
count tokens of text they did not tokenize."""
BYTES_PER_TOKEN = CHARS_PER_TOKEN
"""Bytes of text per token on the wire (UTF-8 English: one byte per character)."""
RESPONSE_OVERHEAD_BYTES = 512
"""Bytes of a response besides its text: HTTP headers and the JSON envelope."""


# -- sizes -----------------------------------------------------------------------------------
# Sizes are counted for one request (ints or floats) or for many at once (integer arrays).
IntArray = npt.NDArray[np.int64]


@overload
def request_bytes(prompt_tokens: int, attachment_bytes: int = 0) -> int: ...
@overload
def request_bytes(prompt_tokens: IntArray, attachment_bytes: IntArray) -> IntArray: ...
def request_bytes(prompt_tokens: Any, attachment_bytes: Any = 0) -> Any:
    """Size on the wire of a request: ``prompt_tokens * BYTES_PER_TOKEN + attachment_bytes``."""
    return prompt_tokens * BYTES_PER_TOKEN + attachment_bytes


@overload
def response_bytes(output_tokens: int) -> int: ...
@overload
def response_bytes(output_tokens: float) -> float: ...
@overload
def response_bytes(output_tokens: IntArray) -> IntArray: ...
def response_bytes(output_tokens: Any) -> Any:
    """Size on the wire of a response of ``output_tokens`` tokens:
    ``output_tokens * BYTES_PER_TOKEN + RESPONSE_OVERHEAD_BYTES``."""
    return output_tokens * BYTES_PER_TOKEN + RESPONSE_OVERHEAD_BYTES


# -- links -----------------------------------------------------------------------------------
BANDWIDTH_EWMA = 0.5
"""Weight of the newest sample in a router's bandwidth estimate, in both worlds: the simulator's
view samples a link each time its bandwidth changes, the gateway each large download."""


def bandwidth_estimate(estimate_mbps: float, sample_mbps: float) -> float:
    """A link's bandwidth estimate after one more sample: an exponentially weighted moving
    average, weight :data:`BANDWIDTH_EWMA` on the sample."""
    return BANDWIDTH_EWMA * sample_mbps + (1 - BANDWIDTH_EWMA) * estimate_mbps


def wire_s(total_bytes: float, bandwidth_mbps: float) -> float:
    """Time to move ``total_bytes`` at ``bandwidth_mbps``: ``total_bytes * 8e-6 / bandwidth``."""
    return total_bytes * 8e-6 / bandwidth_mbps


def transfer_s(
    total_bytes: float,
    bandwidth_mbps: float,
    rtt_s: float,
    share: float,
    active_weight: float,
) -> float:
    """Transfer time of ``total_bytes`` over a link shared by weighted fair sharing.

    With ``w = wire_s(total_bytes, bandwidth_mbps)``, a share ``z`` and a weight ``W`` of the
    transfers already active on the link, the transfer takes ``w * (z + W) / z`` plus the round
    trip, computed as ``(w + rtt) + (1 / z) * (w * W)``. ``z = 1, W = 0`` is a transfer alone
    on the link.
    """
    wire = wire_s(total_bytes, bandwidth_mbps)
    return (wire + rtt_s) + (1.0 / share) * (wire * active_weight)


def transmission_j(tx_power_w: float, link_s: float) -> float:
    """Energy of a transfer: ``tx_power_w * link_s``, where ``link_s`` is the share of the
    link's busy time the transfer holds, its bytes at the link's bandwidth (``wire_s``). A link
    draws ``tx_power_w`` while bytes move, however many transfers share it, and not while a
    request waits for the round trip; so the energy does not depend on the share a transfer gets,
    only on what it moves."""
    return tx_power_w * link_s


# -- servers ---------------------------------------------------------------------------------
def busy_power_w(
    idle_w: float, max_w: float, batch1_fraction: float, log2_slope: float, batch: float
) -> float:
    """Power of a server busy with a batch of ``batch`` requests (at least one counted):
    ``idle_w + (max_w - idle_w) * min(1, batch1_fraction + log2_slope * log2(batch))``."""
    fraction = min(1.0, batch1_fraction + log2_slope * math.log2(max(batch, 1.0)))
    return idle_w + (max_w - idle_w) * fraction


def batch_share_j(power_w: float, seconds: float, batch: float) -> float:
    """One request's share of a batch's energy: ``power_w * seconds / batch`` (the members of a
    batch split its energy equally)."""
    return power_w * seconds / batch


def prefill_s(prefill_fixed_s: float, prefill_s_per_token: float, prompt_tokens: float) -> float:
    """Time to prefill ``prompt_tokens`` tokens: ``prefill_fixed_s + prompt_tokens *
    prefill_s_per_token``."""
    return prefill_fixed_s + prompt_tokens * prefill_s_per_token


def step_roofline_s(
    step_compute_s_per_seq: float,
    step_weights_s: float,
    step_s_per_kv_token: float,
    batch: float,
    kv_tokens: float,
) -> float:
    """The roofline part of a decode step: ``max(compute, memory)`` with ``compute =
    step_compute_s_per_seq * batch`` and ``memory = step_weights_s + kv_tokens *
    step_s_per_kv_token``."""
    memory = step_weights_s + kv_tokens * step_s_per_kv_token
    return max(step_compute_s_per_seq * batch, memory)


def step_s(
    step_overhead_s: float,
    step_compute_s_per_seq: float,
    step_weights_s: float,
    step_s_per_kv_token: float,
    batch: float,
    kv_tokens: float,
) -> float:
    """Time of one decode step of ``batch`` sequences holding ``kv_tokens`` cached tokens:
    ``step_overhead_s + step_roofline_s(...)``."""
    return step_overhead_s + step_roofline_s(
        step_compute_s_per_seq, step_weights_s, step_s_per_kv_token, batch, kv_tokens
    )
