"""Workload config validation and its one-line error messages."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from perllm.cluster.settings import validation_message
from perllm.errors import InputError
from perllm.workload.config import LengthConfig, load_workload_config
from perllm.workload.presets import BUILTIN_CLASS_TABLE, builtin_classes

SOURCE = "scenario.yaml"


def _valid() -> dict[str, Any]:
    return {
        "arrivals": {"process": "gamma", "rate-rps": 4.0, "cv": 2.0},
        "classes": [
            {
                "name": "chat",
                "share": 1.0,
                "prompt": {"preset": "sharegpt-prompt"},
                "output": {"kind": "lognormal", "mean": 100, "median": 80, "max-tokens": 512},
                "deadline": {"low-s": 5, "high-s": 10, "per-output-token-s": 0.01},
            }
        ],
    }


def _error(data: Any) -> str:
    with pytest.raises(InputError) as info:
        load_workload_config(data, SOURCE)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{SOURCE}: ")
    return message


def test_valid_config_loads_with_kebab_or_snake_keys() -> None:
    cfg = load_workload_config(_valid(), SOURCE)
    assert cfg.arrivals.rate_rps == 4.0
    assert cfg.classes[0].output.max_tokens == 512
    assert cfg.classes[0].deadline.per_output_token_s == 0.01
    snake = _valid()
    snake["arrivals"] = {"rate_rps": 2.0}
    assert load_workload_config(snake, SOURCE).arrivals.rate_rps == 2.0


def test_configs_are_frozen() -> None:
    cfg = load_workload_config(_valid(), SOURCE)
    with pytest.raises(ValidationError):
        cfg.arrivals.rate_rps = 3.0


def test_share_must_be_positive() -> None:
    data = _valid()
    data["classes"][0]["share"] = 0
    message = _error(data)
    assert "field 'classes.0.share': Input should be greater than 0" in message


def test_median_above_mean() -> None:
    data = _valid()
    data["classes"][0]["output"]["median"] = 200
    message = _error(data)
    assert "field 'classes.0.output'" in message
    assert "median (200.0) must be <= mean (100.0)" in message


def test_unknown_key_is_named_as_written() -> None:
    data = _valid()
    data["arrivals"]["rate_rsp"] = 1.0
    assert "field 'arrivals.rate_rsp': Extra inputs are not permitted" in _error(data)


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        ({"arrivals": {"rate-rps": -1}}, "field 'arrivals.rate-rps'"),
        ({"arrivals": {"rate-rps": 1e308}}, "field 'arrivals.rate-rps'"),
        ({"arrivals": {"rate-rps": 1, "process": "weibull"}}, "field 'arrivals.process'"),
        ({"classes": []}, "field 'classes': List should have at least 1 item"),
        ({"trace": {"path": "t.csv", "format": "parquet"}}, "field 'trace.format'"),
    ],
)
def test_bad_top_level_values(patch: dict[str, Any], expected: str) -> None:
    data = {**_valid(), **patch}
    assert expected in _error(data)


def test_duplicate_class_names() -> None:
    data = _valid()
    data["classes"].append(copy.deepcopy(data["classes"][0]))
    assert "duplicate service class name 'chat'" in _error(data)


def test_missing_field_and_more_errors_counted() -> None:
    data = _valid()
    del data["classes"][0]["deadline"]
    data["classes"][0]["share"] = -1
    message = _error(data)
    assert "(and 1 more error)" in message


def test_deadline_bounds_order() -> None:
    data = _valid()
    data["classes"][0]["deadline"] = {"low-s": 10, "high-s": 5}
    assert "low-s (10.0) must be <= high-s (5.0)" in _error(data)


def test_not_a_mapping() -> None:
    assert "Input should be a valid dictionary" in _error(["not", "a", "mapping"])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"preset": "alpaca-prompt", "mean": 3}, "either preset or explicit parameters"),
        ({"preset": "alpaca-prompt", "kind": "fixed"}, "either preset or explicit parameters"),
        ({"kind": "uniform", "low": 5}, "kind uniform needs high"),
        ({"kind": "uniform", "low": 9, "high": 5}, "low (9) must be <= high (5)"),
        ({"kind": "fixed", "mean": 5, "median": 4}, "kind fixed does not take median"),
        ({"kind": "lognormal"}, "kind lognormal needs mean"),
        ({"mean": 0}, "Input should be greater than 0"),
        ({"mean": 10, "min-tokens": 20, "max-tokens": 10}, "min-tokens must be <= max-tokens"),
        ({"preset": "sharegpt"}, "Input should be"),
    ],
)
def test_bad_length_configs(fields: dict[str, Any], expected: str) -> None:
    with pytest.raises(ValidationError) as info:
        LengthConfig.model_validate(fields)
    message = validation_message(info.value, "w.yaml")
    assert expected in message
    assert "\n" not in message


def test_validation_message_with_line_and_snake_names() -> None:
    with pytest.raises(ValidationError) as info:
        LengthConfig.model_validate({"min_tokens": "x", "mean": 3})
    assert validation_message(info.value, "f.yaml", 3).startswith("f.yaml:3: field 'min-tokens'")
    snake = validation_message(info.value, "f.jsonl", 3, kebab=False)
    assert snake.startswith("f.jsonl:3: field 'min_tokens'")
    assert "got 'x'" in snake


def test_builtin_classes() -> None:
    classes = builtin_classes()
    assert [c.name for c in classes] == [
        "realtime-assistant",
        "chat",
        "doc-summary",
        "batch-analytics",
    ]
    assert sum(c.share for c in classes) == pytest.approx(1.0)
    assert len(classes) == len(BUILTIN_CLASS_TABLE)
    doc = classes[2]
    assert doc.attachment_bytes is not None
    assert doc.attachment_bytes.max_tokens >= 10_000_000
    assert doc.prompt.max_tokens == 4096
