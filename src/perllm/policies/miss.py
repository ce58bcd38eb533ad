"""The chance that a request misses its deadline on a server (CS-UCB's stage 4).

The time of a request with ``o`` output tokens is ``F exp(eps) (fixed + o step)``: the model's
time (``fixed`` all but the decode steps of the output, ``step`` one of them), times the learned
pessimistic correction ``F`` and the model's error on one request, ``eps ~ N(0, sd_l^2)``; the
length is log-normal, ``ln o ~ N(mu_o, sd_o^2)``. For a given ``eps`` the miss is ``o`` above a
threshold (a log-normal tail, ``erfc``); for a given ``o`` it is ``eps`` above one (a normal
tail). The probability integrates one variable exactly inside and the other by Gauss-Hermite
quadrature, choosing as the outer variable the one that spreads the time least, so that the
integrand is smooth. Arms far on either side of the deadline skip the quadrature.
"""

from __future__ import annotations

import math

import numpy as np

from perllm.policies.kernel_cache import kernel

# Gauss-Hermite nodes and weights for a standard normal (5 points: exact to degree 9).
_NODES = np.array(
    (-2.8569700138728056, -1.3556261799742659, 0.0, 1.3556261799742659, 2.8569700138728056)
)
_WEIGHTS = np.array(
    (
        0.011257411327720693,
        0.2220759220056126,
        0.5333333333333333,
        0.2220759220056126,
        0.011257411327720693,
    )
)


@kernel
def miss_probability(  # pragma: no cover - compiled; tested against a Monte Carlo draw
    deadline_s: float,
    factor: float,
    fixed_s: float,
    step_s: float,
    mu_o: float,
    sd_o: float,
    sd_l: float,
) -> float:
    """``P(factor exp(eps) (fixed_s + o step_s) > deadline_s)`` for ``eps ~ N(0, sd_l^2)`` and
    ``ln o ~ N(mu_o, sd_o^2)`` (see the module docstring); 1 where a parameter makes no sense (no
    time left, or not a number)."""
    if not (deadline_s > 0.0 and factor > 0.0 and sd_l >= 0.0 and sd_o >= 0.0):
        return 1.0
    if sd_o <= 0.0 or step_s <= 0.0:
        # The length is known (or does not matter): the time is log-normal.
        total = fixed_s + math.exp(mu_o) * step_s
        if total <= 0.0:
            return 0.0
        gap = math.log(deadline_s / (factor * total))
        if sd_l <= 0.0:
            return 1.0 if gap < 0.0 else 0.0
        return 0.5 * math.erfc(gap / (sd_l * math.sqrt(2.0)))
    # Quadrature over the variable that spreads the time least: the other one, exact inside,
    # smooths the integrand (``frac``: how much of the time the output's length drives).
    middle = math.exp(mu_o) * step_s
    frac = middle / (fixed_s + middle) if fixed_s + middle > 0.0 else 1.0
    # Far in time at the median length, by more than seven spreads of the time's log (whose
    # slope in the length's log is below 1): no quadrature needed.
    spread = math.sqrt(sd_l * sd_l + sd_o * sd_o)
    if (
        fixed_s + middle > 0.0
        and math.log(deadline_s / (factor * (fixed_s + middle))) > 7.0 * spread
    ):
        return 0.0
    if fixed_s > 0.0 and math.log(factor * fixed_s / deadline_s) > 7.0 * sd_l:
        return 1.0  # late even with no output at all
    over_length = sd_l >= frac * sd_o
    p = 0.0
    for j in range(_NODES.shape[0]):
        if over_length:
            total = fixed_s + math.exp(mu_o + sd_o * _NODES[j]) * step_s
            gap = math.log(deadline_s / (factor * total)) if total > 0.0 else math.inf
            p += _WEIGHTS[j] * 0.5 * math.erfc(gap / (sd_l * math.sqrt(2.0)))
            continue
        limit = (deadline_s * math.exp(-sd_l * _NODES[j]) / factor - fixed_s) / step_s
        if limit <= 0.0:
            p += _WEIGHTS[j]
        else:
            p += _WEIGHTS[j] * 0.5 * math.erfc((math.log(limit) - mu_o) / (sd_o * math.sqrt(2.0)))
    return min(max(p, 0.0), 1.0) if p == p else 1.0
