"""Length distributions: the lognormal fit, the presets, fixed, uniform and clipping."""

from __future__ import annotations

import math
from typing import get_args

import numpy as np
import pytest

from perllm.workload.config import LengthConfig, LengthPreset
from perllm.workload.lengths import (
    DEFAULT_MEAN_TO_MEDIAN,
    LENGTH_PRESETS,
    length_dist,
    lognormal_params,
)

DRAWS = 200_000


def test_every_preset_has_figures() -> None:
    assert set(LENGTH_PRESETS) == set(get_args(LengthPreset))


@pytest.mark.parametrize("preset", sorted(LENGTH_PRESETS))
def test_preset_sample_mean_and_median_match(preset: LengthPreset) -> None:
    mean, median = LENGTH_PRESETS[preset]
    dist = length_dist(LengthConfig(preset=preset))
    draws = dist.sample(np.random.default_rng(7), DRAWS)
    assert draws.dtype == np.int64
    assert draws.shape == (DRAWS,)
    assert float(draws.mean()) == pytest.approx(mean, rel=0.05)
    assert float(np.median(draws)) == pytest.approx(median, rel=0.05)


def test_azure_figures_are_the_published_ones() -> None:
    assert LENGTH_PRESETS["azure-conv-prompt"] == (1155.0, 1020.0)
    assert LENGTH_PRESETS["azure-conv-output"] == (211.0, 129.0)
    assert LENGTH_PRESETS["azure-code-prompt"] == (2048.0, 1469.0)
    assert LENGTH_PRESETS["azure-code-output"] == (27.9, 13.0)


def test_lognormal_params_formula() -> None:
    mu, sigma = lognormal_params(211.0, 129.0)
    assert mu == pytest.approx(math.log(129.0))
    assert math.exp(mu + sigma**2 / 2) == pytest.approx(211.0)
    assert lognormal_params(5.0, 5.0) == (math.log(5.0), 0.0)


def test_explicit_lognormal_without_median_uses_default_ratio() -> None:
    dist = length_dist(LengthConfig(mean=320.0))
    assert dist.median == pytest.approx(320.0 / DEFAULT_MEAN_TO_MEDIAN)
    draws = dist.sample(np.random.default_rng(3), DRAWS)
    assert float(draws.mean()) == pytest.approx(320.0, rel=0.05)


def test_fixed_and_uniform() -> None:
    rng = np.random.default_rng(0)
    fixed = length_dist(LengthConfig(kind="fixed", mean=42.4)).sample(rng, 100)
    assert set(fixed.tolist()) == {42}
    uniform = length_dist(LengthConfig(kind="uniform", low=10, high=13)).sample(rng, 10_000)
    assert set(uniform.tolist()) == {10, 11, 12, 13}


def test_draws_are_clipped() -> None:
    cfg = LengthConfig(mean=1000.0, median=100.0, min_tokens=50, max_tokens=500)
    draws = length_dist(cfg).sample(np.random.default_rng(1), 50_000)
    assert draws.min() == 50
    assert draws.max() == 500


def test_preset_keeps_its_clip_bounds() -> None:
    dist = length_dist(LengthConfig(preset="azure-conv-prompt", max_tokens=4096))
    assert dist.max_value == 4096
    assert dist.sample(np.random.default_rng(2), 10_000).max() <= 4096


def test_zero_draws() -> None:
    assert length_dist(LengthConfig(mean=10.0)).sample(np.random.default_rng(0), 0).size == 0
