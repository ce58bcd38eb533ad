"""Token-length distributions: lognormal fitted from mean and median, fixed, uniform.

The presets come from the published statistics in PROFILES.md ("Workloads"). A lognormal
with median ``m`` and mean ``M`` has ``mu = ln(m)`` and ``sigma = sqrt(2 ln(M / m))``
(because ``mean = exp(mu + sigma**2 / 2)``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from perllm.workload.config import LengthConfig, LengthPreset

__all__ = [
    "DEFAULT_MEAN_TO_MEDIAN",
    "LENGTH_PRESETS",
    "LengthDist",
    "length_dist",
    "lognormal_params",
]

# When only a mean is known, the median is assumed to be mean / 1.6 (sigma about 0.97),
# close to the skew of the Azure conversation outputs (211 / 129 = 1.64). An assumption.
DEFAULT_MEAN_TO_MEDIAN = 1.6

# preset -> (mean tokens, median tokens)
LENGTH_PRESETS: dict[LengthPreset, tuple[float, float]] = {
    # Azure LLM inference trace 2023 (PROFILES.md): both mean and median published.
    "azure-conv-prompt": (1155.0, 1020.0),
    "azure-conv-output": (211.0, 129.0),
    "azure-code-prompt": (2048.0, 1469.0),
    "azure-code-output": (27.9, 13.0),
    # ShareGPT as used in the vLLM paper: only the means (161, 338) are published.
    # Assumed medians: prompts skewed like the default (161 / 1.6 ~ 100); outputs less
    # skewed (250), since many answers run to a few hundred tokens.
    "sharegpt-prompt": (161.0, 100.0),
    "sharegpt-output": (338.0, 250.0),
    # Alpaca: only the means (19, 58) are published. Assumed medians: instructions are
    # short and narrow (16); outputs moderately skewed (42).
    "alpaca-prompt": (19.0, 16.0),
    "alpaca-output": (58.0, 42.0),
}

LengthKind = Literal["lognormal", "fixed", "uniform"]
IntArray = npt.NDArray[np.int64]


def lognormal_params(mean: float, median: float) -> tuple[float, float]:
    """Lognormal ``(mu, sigma)`` with the given mean and median (``median <= mean``).

    Parameters
    ----------
    mean, median
        Positive; ``median <= mean``.

    Returns
    -------
    tuple of float
        ``(ln(median), sqrt(2 ln(mean / median)))``.
    """
    return math.log(median), math.sqrt(2.0 * math.log(mean / median))


@dataclass(frozen=True, slots=True)
class LengthDist:
    """A validated length distribution, clipped to ``[min_value, max_value]``.

    ``mean`` and ``median`` parametrise ``lognormal`` (``fixed`` uses ``mean``);
    ``low`` and ``high`` parametrise ``uniform`` (inclusive).
    """

    kind: LengthKind
    min_value: int
    max_value: int
    mean: float = 0.0
    median: float = 0.0
    low: int = 0
    high: int = 0

    @property
    def nominal_mean(self) -> float:
        """The distribution's stated mean (before clipping), clipped to its bounds: a figure
        known to whoever defines the service, unlike any one request's draw."""
        mean = (self.low + self.high) / 2.0 if self.kind == "uniform" else self.mean
        return float(min(max(mean, self.min_value), self.max_value))

    def sample(self, rng: np.random.Generator, n: int) -> IntArray:
        """Draw ``n`` integer lengths.

        Parameters
        ----------
        rng
            The generator every draw comes from.
        n
            Number of draws.

        Returns
        -------
        numpy.ndarray of int64
            Shape ``(n,)``, each in ``[min_value, max_value]``.
        """
        values: npt.NDArray[np.float64]
        if self.kind == "lognormal":
            mu, sigma = lognormal_params(self.mean, self.median)
            values = rng.lognormal(mu, sigma, n)
        elif self.kind == "fixed":
            values = np.full(n, float(round(self.mean)))
        else:
            values = rng.integers(self.low, self.high, size=n, endpoint=True).astype(np.float64)
        clipped = np.clip(np.rint(values), self.min_value, self.max_value)
        return clipped.astype(np.int64)


def length_dist(cfg: LengthConfig) -> LengthDist:
    """Build the distribution a :class:`LengthConfig` describes.

    Parameters
    ----------
    cfg
        A validated config (a preset, or explicit parameters for its ``kind``).

    Returns
    -------
    LengthDist
    """
    bounds = {"min_value": cfg.min_tokens, "max_value": cfg.max_tokens}
    if cfg.preset is not None:
        mean, median = LENGTH_PRESETS[cfg.preset]
        return LengthDist(kind="lognormal", mean=mean, median=median, **bounds)
    if cfg.kind == "uniform":
        assert cfg.low is not None and cfg.high is not None  # checked by LengthConfig
        return LengthDist(kind="uniform", low=cfg.low, high=cfg.high, **bounds)
    assert cfg.mean is not None  # checked by LengthConfig
    if cfg.kind == "fixed":
        return LengthDist(kind="fixed", mean=cfg.mean, median=cfg.mean, **bounds)
    median = cfg.median if cfg.median is not None else cfg.mean / DEFAULT_MEAN_TO_MEDIAN
    return LengthDist(kind="lognormal", mean=cfg.mean, median=median, **bounds)
