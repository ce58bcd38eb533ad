"""Timed streaming calls to an OpenAI-compatible server (``POST /v1/completions``).

Each call records when it was sent, when each streamed text chunk arrived, and how many prompt
tokens it had. A server streams about one chunk per token, so chunk arrivals time the decode
steps. Prompts are random word sequences that start with a unique number, so a server's prompt
prefix cache cannot shorten prefill between calls.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

import httpx
import numpy as np

from perllm.errors import PerllmError

# Short, common English words: about one token each in the usual BPE/SentencePiece vocabularies.
_WORDS_TEXT = (
    "the of and to in is was for on are with as at be by this had not but from or have an "
    "they which one you were all we her she there would their will when who him been has more "
    "if no out do so can what up said about other into than its time only could new them man "
    "some these then two first may any like now my such make over our even most me state after"
)
_WORDS = tuple(_WORDS_TEXT.split())
_INSTRUCTION = "Continue counting up: 1, 2, 3, 4, 5,"

__all__ = ["EndpointError", "StreamTiming", "discover_model", "make_prompt", "stream_completion"]


class EndpointError(PerllmError):
    """The endpoint cannot be reached or does not answer like an OpenAI-compatible server."""


@dataclass(slots=True)
class StreamTiming:
    """One streamed completion: send time and chunk arrival times (``time.monotonic`` s)."""

    prompt_tokens: int
    sent_s: float
    chunk_s: list[float] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.chunk_s)

    @property
    def ttft_s(self) -> float:
        """Time to the first streamed token."""
        return self.chunk_s[0] - self.sent_s if self.chunk_s else float("nan")

    @property
    def tpot_s(self) -> float:
        """Mean time per output token after the first."""
        if len(self.chunk_s) < 2:
            return float("nan")
        return (self.chunk_s[-1] - self.chunk_s[0]) / (len(self.chunk_s) - 1)


def make_prompt(rng: np.random.Generator, words: int) -> str:
    """A prompt of a unique number, ``words`` random words and a counting instruction."""
    body = " ".join(rng.choice(_WORDS, size=max(words, 0)))
    return f"{int(rng.integers(10**6, 10**7))} {body}\n{_INSTRUCTION}"


def _fail(endpoint: str, err: Exception) -> EndpointError:
    reason = str(err).splitlines()[0] if str(err) else type(err).__name__
    return EndpointError(f"--endpoint {endpoint}: {reason}")


def discover_model(client: httpx.Client, endpoint: str) -> str:
    """The first model id the server lists at ``/v1/models``."""
    try:
        response = client.get(f"{endpoint}/v1/models")
        response.raise_for_status()
        models = response.json()["data"]
        return str(models[0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as err:
        raise _fail(endpoint, err) from None


def count_tokens(client: httpx.Client, endpoint: str, model: str, text: str) -> int | None:
    """Prompt length by the server's tokenizer (llama-cpp-python or llama.cpp), else ``None``."""
    for path, key in (("/extras/tokenize/count", "count"), ("/tokenize", "tokens")):
        try:
            response = client.post(f"{endpoint}{path}", json={"input": text, "content": text})
            if response.status_code != 200:
                continue
            value = response.json()[key]
            return len(value) if isinstance(value, list) else int(value)
        except (httpx.HTTPError, ValueError, KeyError, TypeError):
            continue
    return None


async def stream_completion(
    client: httpx.AsyncClient,
    endpoint: str,
    model: str,
    prompt: str,
    prompt_tokens: int,
    max_tokens: int,
) -> StreamTiming:
    """Send one streaming completion and time every chunk that carries text."""
    body = {
        "model": model,
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0.0,
        "stream": True,
    }
    timing = StreamTiming(prompt_tokens, time.monotonic())
    try:
        async with client.stream("POST", f"{endpoint}/v1/completions", json=body) as response:
            if response.status_code != 200:
                await response.aread()
                raise EndpointError(
                    f"--endpoint {endpoint}: /v1/completions answered {response.status_code}: "
                    f"{response.text[:200]}"
                )
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choices = json.loads(data).get("choices") or [{}]
                if choices[0].get("text"):
                    timing.chunk_s.append(time.monotonic())
    except httpx.HTTPError as err:
        raise _fail(endpoint, err) from None
    return timing
