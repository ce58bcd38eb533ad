"""The HTTP edge of the gateway: OpenAI-style errors and validation of incoming calls.

Every problem with a call becomes an :class:`ApiError`, answered as
``{"error": {"message", "type", "code"}}`` with a 4xx status that names the problem.

Per-request deadline (the processing-time requirement, arrival to last byte), first match wins
(the headers of a later rule are then not read):

1. ``x-perllm-deadline-ms``;
2. a time-to-first-token and/or a time-per-output-token SLO: ``ttft + tpot * max_tokens`` (a
   missing one counts as 0; ``max_tokens`` from the body, else the class's ``output-tokens``).
   Each SLO comes from either of two names: ``x-slo-ttft-ms`` or llm-d's
   ``x-llm-d-slo-ttft-ms``, and ``x-slo-tpot-ms`` or ``x-llm-d-slo-tpot-ms``. For each SLO
   separately, the ``x-slo-*`` value is used if that header is present, else the
   ``x-llm-d-slo-*`` one; both names of one SLO with different values are a ``400`` naming
   both headers (the same value under both names is accepted);
3. the service class's ``deadline-ms`` (class from ``x-perllm-class``, else the default class).

Every header read above is checked: a value that is not a number of ms in range is a ``400``
naming that header.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from starlette.requests import Request as HttpRequest
from starlette.responses import JSONResponse

from perllm.domain import CHARS_PER_TOKEN
from perllm.gateway.config import GatewayConfig
from perllm.prefix import body_blocks

__all__ = [
    "ApiError",
    "Call",
    "body_too_large",
    "error_response",
    "parse_call",
    "read_body",
    "unknown_model",
]

Kind = Literal["chat", "completions"]


class ApiError(Exception):
    """An error answered to the client as an OpenAI-style JSON body."""

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        type_: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.type = type_ or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = dict(headers or {})

    def response(self) -> JSONResponse:
        return error_response(self.status, self.message, self.code, self.type, self.headers)


def error_response(
    status: int,
    message: str,
    code: str,
    type_: str = "",
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    """An OpenAI-style error response."""
    kind = type_ or ("invalid_request_error" if status < 500 else "server_error")
    body = {"error": {"message": message, "type": kind, "code": code}}
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


@dataclass(frozen=True, slots=True)
class Call:
    """A validated call, ready to schedule."""

    kind: Kind
    body: dict[str, Any]
    raw: bytes
    model: str
    stream: bool
    max_tokens: int | None
    output_tokens: int
    service_class: str
    deadline_s: float
    prompt_tokens: int
    # Chained hashes of the prompt's blocks (perllm.prefix.body_blocks: of its compact JSON, so
    # that calls sharing leading messages share leading blocks); the text itself is not kept.
    prefix_blocks: tuple[int, ...] = ()


def unknown_model(model: str, models: Collection[str]) -> ApiError:
    """The ``404`` of a model no backend serves."""
    known = ", ".join(models)
    return ApiError(404, f"model {model!r} is not served here; known: {known}", "model_not_found")


def body_too_large(max_bytes: int, declared: int | None = None) -> ApiError:
    """The ``413`` of a body over ``limits.max-body-bytes``."""
    size = "" if declared is None else f" of {declared} bytes"
    return ApiError(
        413,
        f"request body{size} exceeds {max_bytes} bytes (limits.max-body-bytes)",
        "too_large",
    )


async def read_body(request: HttpRequest, max_bytes: int, timeout_s: float) -> bytes:
    """The request body, refused with ``413`` as soon as it exceeds ``max_bytes`` and with
    ``408`` (closing the connection) when it has not all arrived within ``timeout_s``.

    A client that hangs up mid-upload raises starlette's ``ClientDisconnect``."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise body_too_large(max_bytes, int(declared))
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > max_bytes:
                    raise body_too_large(max_bytes)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408,
            f"request body not received in full within {timeout_s:g} s (timeouts.body-s)",
            "body_timeout",
            headers={"connection": "close"},
        ) from None
    return b"".join(chunks)


def _text_chars(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value) * CHARS_PER_TOKEN  # a list of token ids
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        return _text_chars(value.get("text", value.get("content", "")))
    return 0


def _prompt_tokens(kind: Kind, body: dict[str, Any]) -> int:
    if kind == "chat":
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "'messages' must be a non-empty list", "missing_messages")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or "role" not in message:
                raise ApiError(
                    400, f"'messages[{i}]' must be an object with a 'role'", "bad_message"
                )
            if message["role"] not in ROLES:
                raise ApiError(
                    400,
                    f"'messages[{i}].role' must be one of {', '.join(ROLES)}, "
                    f"got {message['role']!r}",
                    "bad_message",
                )
            content = message.get("content")
            if content is not None and not isinstance(content, str | list):
                raise ApiError(
                    400,
                    f"'messages[{i}].content' must be a string or a list of parts, got {content!r}",
                    "bad_message",
                )
        chars = sum(_text_chars(m.get("content")) for m in messages)
    else:
        prompt = body.get("prompt")
        if prompt is None or not isinstance(prompt, str | list):
            raise ApiError(400, "'prompt' is required (a string or a list)", "missing_prompt")
        chars = _text_chars(prompt)
    return max(1, math.ceil(chars / CHARS_PER_TOKEN))


# The message roles of OpenAI's chat API.
ROLES = ("system", "developer", "user", "assistant", "tool", "function")
# Deeper JSON is refused: no OpenAI body nests this far, and parsing or re-encoding a body must
# never hit Python's recursion limit.
MAX_JSON_DEPTH = 64


def _json_object(raw: bytes) -> dict[str, Any]:
    """The body as a JSON object (:class:`ApiError` 400 if it is not one, or nests too deep)."""
    try:
        body = json.loads(raw)
    except RecursionError:
        body = None  # a body nested thousands deep
    except (ValueError, UnicodeDecodeError):
        raise ApiError(400, "request body is not valid JSON", "invalid_json") from None
    if body is None or _depth(body) > MAX_JSON_DEPTH:
        raise ApiError(
            400, f"request body nests deeper than {MAX_JSON_DEPTH} levels", "invalid_json"
        )
    if not isinstance(body, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_json")
    return body


def _depth(value: Any) -> int:
    """How deep JSON ``value`` nests (a scalar is 0), walked without recursion."""
    deepest = 0
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            depth += 1
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
            stack.extend((v, depth) for v in (item.values() if isinstance(item, dict) else item))
    return deepest


def _check_choices(body: dict[str, Any]) -> None:
    n = body.get("n")
    if n is not None and (isinstance(n, bool) or n != 1):
        raise ApiError(
            400, f"'n' must be 1 (one choice per call is scheduled), got {n!r}", "bad_param"
        )
    options = body.get("stream_options")
    if options is None:
        return
    if not isinstance(options, dict):
        raise ApiError(400, f"'stream_options' must be an object, got {options!r}", "bad_param")
    if body.get("stream") is not True:
        raise ApiError(400, "'stream_options' is only allowed with 'stream': true", "bad_param")
    usage = options.get("include_usage")
    if usage is not None and not isinstance(usage, bool):
        raise ApiError(
            400,
            f"'stream_options.include_usage' must be true or false, got {usage!r}",
            "bad_param",
        )


# OpenAI's sampling parameters and their ranges: checked here so that a bad one is a 400 naming
# it, not an error (or a silent default) from whichever backend the request lands on.
SAMPLING_RANGES = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "presence_penalty": (-2.0, 2.0),
    "frequency_penalty": (-2.0, 2.0),
}
MAX_DEADLINE_MS = 86_400_000.0  # a day: a longer processing-time requirement is a mistake
# Each SLO's headers: the name read first, then llm-d's name for it.
TTFT_HEADERS = ("x-slo-ttft-ms", "x-llm-d-slo-ttft-ms")
TPOT_HEADERS = ("x-slo-tpot-ms", "x-llm-d-slo-tpot-ms")


def _check_sampling(body: dict[str, Any]) -> None:
    for key, (low, high) in SAMPLING_RANGES.items():
        value = body.get(key)
        if value is None:
            continue
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or not low <= value <= high:
            raise ApiError(
                400, f"'{key}' must be a number in [{low:g}, {high:g}], got {value!r}", "bad_param"
            )


def _max_tokens(body: dict[str, Any]) -> int | None:
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ApiError(
                400, f"'{key}' must be a positive integer, got {value!r}", "bad_max_tokens"
            )
        return value
    return None


def _header_ms(headers: Mapping[str, str], name: str) -> float | None:
    text = headers.get(name)
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        raise ApiError(
            400, f"header {name}: expected a number of ms, got {text!r}", "bad_header"
        ) from None
    if not math.isfinite(value) or value < 0 or (name == "x-perllm-deadline-ms" and value == 0):
        raise ApiError(
            400, f"header {name}: must be a positive number of ms, got {text!r}", "bad_header"
        )
    if value > MAX_DEADLINE_MS:
        raise ApiError(
            400,
            f"header {name}: must be at most {MAX_DEADLINE_MS:.0f} ms, got {text!r}",
            "bad_header",
        )
    return value


def _slo_ms(headers: Mapping[str, str], names: tuple[str, str]) -> tuple[float, str] | None:
    """One SLO in ms and the header it came from: the first name's value if present, else the
    second's; ``None`` if neither is sent. Both names with different values are a ``400``."""
    first, second = names
    value, other = _header_ms(headers, first), _header_ms(headers, second)
    if value is not None and other is not None and value != other:
        raise ApiError(
            400,
            f"headers {first} ({headers[first]!r}) and {second} ({headers[second]!r}) give "
            "different values for one SLO; send one of them",
            "bad_header",
        )
    if value is not None:
        return value, first
    if other is not None:
        return other, second
    return None


def _deadline_s(headers: Mapping[str, str], default_ms: float, output_tokens: int) -> float:
    deadline = _header_ms(headers, "x-perllm-deadline-ms")
    if deadline is not None:
        return deadline / 1000.0
    ttft, tpot = _slo_ms(headers, TTFT_HEADERS), _slo_ms(headers, TPOT_HEADERS)
    if ttft is None and tpot is None:
        return default_ms / 1000.0
    total = (ttft[0] if ttft else 0.0) + (tpot[0] if tpot else 0.0) * output_tokens
    if total <= 0:
        used = [slo[1] for slo in (ttft, tpot) if slo is not None]
        named = f"headers {'/'.join(used)} give" if len(used) > 1 else f"header {used[0]} gives"
        raise ApiError(400, f"{named} a zero deadline", "bad_header")
    return total / 1000.0


def parse_call(
    kind: Kind,
    raw: bytes,
    headers: Mapping[str, str],
    config: GatewayConfig,
    models: Collection[str],
) -> Call:
    """Validate a completion call's body and scheduling headers (:class:`ApiError` if bad)."""
    body = _json_object(raw)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' is required (a string)", "missing_model")
    if model not in models:
        raise unknown_model(model, models)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, f"'stream' must be true or false, got {stream!r}", "bad_stream")
    prompt_tokens = _prompt_tokens(kind, body)
    _check_choices(body)
    _check_sampling(body)
    max_tokens = _max_tokens(body)
    name = headers.get("x-perllm-class", config.default_class)
    service = config.classes.get(name)
    if service is None:
        known = ", ".join(config.classes)
        raise ApiError(
            400, f"header x-perllm-class: unknown class {name!r}; known: {known}", "bad_class"
        )
    output_tokens = max_tokens if max_tokens is not None else service.output_tokens
    return Call(
        kind=kind,
        body=body,
        raw=raw,
        model=model,
        stream=stream,
        max_tokens=max_tokens,
        output_tokens=output_tokens,
        service_class=name,
        deadline_s=_deadline_s(headers, service.deadline_ms, output_tokens),
        prompt_tokens=prompt_tokens,
        prefix_blocks=body_blocks(body, kind == "chat"),
    )
