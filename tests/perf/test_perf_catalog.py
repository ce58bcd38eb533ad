"""The built-in catalog and the roofline model: required entries, sources, and sanity."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from perllm.cluster import scenario
from perllm.perf.catalog import BYTES_PER_WEIGHT, HARDWARE, MODELS
from perllm.perf.model import Deployment, deployment

REQUIRED_HARDWARE = (
    "xeon-silver-4214r",
    "a100-40gb",
    "a100-80gb",
    "h100-sxm",
    "rtx-4090",
    "rtx-3090",
    "jetson-agx-orin-64gb",
)
# 6B, 7B, 13B and 33B models, each in fp16, int8 and 4-bit.
REQUIRED_MODELS = ("chatglm-6b", "llama-2-7b", "llama-2-13b", "vicuna-33b")
REQUIRED_DTYPES = ("fp16", "int8", "q4")


@pytest.mark.parametrize("name", REQUIRED_HARDWARE)
def test_required_hardware_exists_with_source(name: str) -> None:
    hw = HARDWARE[name]
    assert hw.source.strip(), f"{name} has no source"
    assert hw.memory_bandwidth_gbps > 0 and hw.compute_tflops > 0 and hw.memory_gb > 0
    assert 0 <= hw.idle_w < hw.max_w


@pytest.mark.parametrize("name", REQUIRED_MODELS)
def test_required_models_exist_with_source(name: str) -> None:
    model = MODELS[name]
    assert model.source.strip(), f"{name} has no source"
    assert model.params_b > 0 and model.kv_bytes_per_token > 0


def test_model_sizes_span_6b_to_33b() -> None:
    sizes = sorted(MODELS[name].params_b for name in REQUIRED_MODELS)
    assert sizes[0] == pytest.approx(6.2, abs=0.5)
    assert sizes[-1] == pytest.approx(32.5, abs=1.0)


def test_required_dtypes_exist_and_shrink_weights() -> None:
    assert set(REQUIRED_DTYPES) <= set(BYTES_PER_WEIGHT)
    assert BYTES_PER_WEIGHT["fp16"] > BYTES_PER_WEIGHT["int8"] > BYTES_PER_WEIGHT["q4"]


@pytest.mark.parametrize("dtype", REQUIRED_DTYPES)
@pytest.mark.parametrize("model", REQUIRED_MODELS)
def test_every_required_deployment_is_derivable(model: str, dtype: str) -> None:
    dep = deployment("a100-80gb", model, dtype)
    perf = dep.perf()
    assert perf.prefill_s(100) > 0 and perf.step_s(1, 100) > 0
    assert dep.power().busy_w(1) > dep.power().idle_w


def test_unknown_names_raise_key_error_naming_them() -> None:
    with pytest.raises(KeyError, match="tpu-v9"):
        deployment("tpu-v9", "llama-2-7b", "fp16")
    with pytest.raises(KeyError, match="gpt-9"):
        deployment("a100-80gb", "gpt-9", "fp16")
    with pytest.raises(KeyError, match="fp3"):
        deployment("a100-80gb", "llama-2-7b", "fp3")


@pytest.mark.parametrize("hardware", REQUIRED_HARDWARE)
def test_decode_is_memory_bound_at_batch_1(hardware: str) -> None:
    perf = deployment(hardware, "llama-2-7b", "fp16").perf()
    memory_s = perf.step_weights_s + 512 * perf.step_s_per_kv_token
    assert memory_s > perf.step_compute_s_per_seq * 1
    assert perf.step_s(1, 512) == pytest.approx(perf.step_overhead_s + memory_s)


def test_decode_becomes_compute_bound_at_large_batch_on_gpu() -> None:
    perf = deployment("h100-sxm", "llama-2-7b", "fp16").perf()
    # With an empty cache, a batch large enough makes the compute term dominate.
    batch = 1
    while perf.step_compute_s_per_seq * batch <= perf.step_weights_s:
        batch *= 2
    assert perf.step_s(batch, 0) == pytest.approx(
        perf.step_overhead_s + perf.step_compute_s_per_seq * batch
    )


@pytest.mark.parametrize("hardware", REQUIRED_HARDWARE)
def test_prefill_time_is_linear_in_prompt_tokens(hardware: str) -> None:
    perf = deployment(hardware, "llama-2-13b", "fp16").perf()
    t = [perf.prefill_s(n) for n in (0, 100, 200, 400, 1600)]
    slope = (t[1] - t[0]) / 100
    assert slope > 0
    for n, value in zip((200, 400, 1600), t[2:], strict=True):
        assert value == pytest.approx(t[0] + slope * n, rel=1e-12)


@pytest.mark.parametrize("hardware", REQUIRED_HARDWARE)
def test_4bit_decodes_faster_than_int8_faster_than_fp16(hardware: str) -> None:
    step = {
        dtype: deployment(hardware, "llama-2-7b", dtype).perf().step_s(1, 256)
        for dtype in REQUIRED_DTYPES
    }
    assert step["q4"] < step["int8"] < step["fp16"]


def test_bigger_models_decode_slower() -> None:
    steps = [deployment("a100-80gb", m, "fp16").perf().step_s(1, 256) for m in REQUIRED_MODELS]
    assert steps == sorted(steps)


def test_kv_capacity_is_what_fits_beside_the_weights() -> None:
    dep = deployment("rtx-3090", "llama-2-7b", "q4")
    free = 24e9 * 0.9 - dep.weight_bytes
    assert dep.kv_capacity_tokens() == int(free // MODELS["llama-2-7b"].kv_bytes_per_token)
    assert deployment("rtx-3090", "vicuna-33b", "fp16").kv_capacity_tokens() == 0


def test_doubling_memory_bandwidth_roughly_halves_memory_bound_step_time() -> None:
    base = deployment("a100-80gb", "llama-2-13b", "fp16")
    hw = dataclasses.replace(base.hardware, memory_bandwidth_gbps=2 * 2039.0)
    fast = Deployment(hw, base.model, "fp16")
    ratio = fast.perf().step_s(1, 1000) / base.perf().step_s(1, 1000)
    assert 0.5 <= ratio < 0.55  # the fixed step overhead does not scale


def _scenario_yaml(overrides: str) -> str:
    return f"""\
name: override-test
links:
  - {{name: wan, bandwidth-mbps: 100, tx-power-w: 1.0}}
servers:
  - name: cloud
    tier: cloud
    hardware: a100-80gb
    model: llama-2-13b
    dtype: fp16
    link: wan
{overrides}
workload:
  arrivals: {{process: poisson, rate-rps: 1.0}}
  classes: personalized
"""


def test_yaml_hardware_overrides_change_the_derived_perf(tmp_path: Path) -> None:
    plain = tmp_path / "plain.yaml"
    plain.write_text(_scenario_yaml(""))
    fast = tmp_path / "fast.yaml"
    fast.write_text(
        _scenario_yaml(
            "    hardware-overrides: {memory-bandwidth-gbps: 4078, idle-w: 10, max-w: 300}"
        )
    )
    base_spec = scenario.load(str(plain)).servers[0]
    fast_spec = scenario.load(str(fast)).servers[0]
    ratio = fast_spec.perf.step_s(1, 1000) / base_spec.perf.step_s(1, 1000)
    assert 0.5 <= ratio < 0.55
    assert fast_spec.perf.prefill_s_per_token == base_spec.perf.prefill_s_per_token
    assert fast_spec.power.idle_w == 10 and fast_spec.power.max_w == 300
    assert base_spec.power.idle_w == HARDWARE["a100-80gb"].idle_w
    # The catalog itself is untouched.
    assert HARDWARE["a100-80gb"].memory_bandwidth_gbps == 2039.0


def test_yaml_memory_override_changes_kv_capacity(tmp_path: Path) -> None:
    small = tmp_path / "small.yaml"
    small.write_text(_scenario_yaml("    hardware-overrides: {memory-gb: 40}"))
    big = tmp_path / "big.yaml"
    big.write_text(_scenario_yaml(""))
    assert (
        scenario.load(str(small)).servers[0].kv_capacity_tokens
        < scenario.load(str(big)).servers[0].kv_capacity_tokens
    )
