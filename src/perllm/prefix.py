"""Prompt prefixes in blocks: the hashes a router computes, a server's cache, the router's record.

A prompt is cut into blocks of :data:`BLOCK_TOKENS` tokens. Each block is named by a hash of
the block *and everything before it*, so two prompts share the hash of their ``k``-th block
exactly when they share their first ``k`` blocks (the chained hashing of vLLM's prefix cache
and of the traces that publish ``hash_ids``, such as Mooncake's). A request's blocks are
:attr:`perllm.domain.RouterRequest.prefix_blocks`: a router computes them from the prompt it
receives (:func:`prompt_blocks`) and keeps no prompt text.

- :class:`BlockLRU` is one server's prefix cache: blocks in least-recently-used order, within a
  capacity in blocks. The simulator keeps one per server as the *true* cache (a request skips
  the prefill of its longest cached prefix).
- :class:`PrefixRecord` is the router's own record: per server, the blocks it has *sent* there
  recently, in an LRU of the server's nominal KV capacity. It is what llm-d's prefix scorer,
  SGLang's cache-aware router and Dynamo's KV router keep; a policy reads it through
  :meth:`perllm.domain.ClusterView.prefix_tokens`, never the servers' true caches.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

from perllm.physics import CHARS_PER_TOKEN

BLOCK_TOKENS = 512
"""Tokens per prefix block: the block size of Mooncake's published ``hash_ids``, and the size
of the blocks the gateway hashes (``BLOCK_TOKENS * CHARS_PER_TOKEN`` characters of prompt)."""


def prompt_blocks(text: str) -> tuple[int, ...]:
    """Chained hashes of ``text``'s full blocks (a trailing partial block is not named: it
    cannot be a shared prefix block). 64-bit BLAKE2b; no text is kept."""
    size = int(BLOCK_TOKENS * CHARS_PER_TOKEN)
    blocks = []
    previous = b""
    # Blocks are cut on characters (what a token estimate counts), hashed as UTF-8 bytes.
    for start in range(0, len(text) - size + 1, size):
        chunk = text[start : start + size].encode("utf-8", "surrogatepass")
        digest = hashlib.blake2b(previous + chunk, digest_size=8).digest()
        blocks.append(int.from_bytes(digest, "little") >> 1)  # a non-negative int64
        previous = digest
    return tuple(blocks)


def body_blocks(body: Mapping[str, Any], chat: bool) -> tuple[int, ...]:
    """The block hashes of an OpenAI request body's prompt (``messages`` for a chat call, else
    ``prompt``): a string as it is, anything else as compact JSON, whose text grows only at its
    end when a conversation adds turns. The gateway and the emulator hash alike."""
    prompt = body.get("messages") if chat else body.get("prompt")
    if isinstance(prompt, str):
        return prompt_blocks(prompt)
    return prompt_blocks(json.dumps(prompt, ensure_ascii=False, separators=(",", ":")))


def cached_tokens(matched_blocks: int, prompt_tokens: int) -> int:
    """Prompt tokens a server skips when the first ``matched_blocks`` blocks are cached: the
    blocks' tokens, leaving at least one token to compute (the one that yields the first
    output token)."""
    return max(min(matched_blocks * BLOCK_TOKENS, prompt_tokens - 1), 0)


class BlockLRU:
    """One server's cache of prefix blocks, least recently used evicted first."""

    __slots__ = ("blocks", "capacity")

    def __init__(self, capacity_blocks: int) -> None:
        self.capacity = max(capacity_blocks, 0)
        self.blocks: OrderedDict[int, None] = OrderedDict()

    def match(self, blocks: Sequence[int]) -> int:
        """How many of ``blocks``, from the first, are cached."""
        held = self.blocks
        n = 0
        for block in blocks:
            if block not in held:
                break
            n += 1
        return n

    def insert(self, blocks: Sequence[int]) -> list[int]:
        """Mark ``blocks`` most recently used (adding those not held); return the evicted."""
        held = self.blocks
        for block in blocks:
            if block in held:
                held.move_to_end(block)
            else:
                held[block] = None
        evicted = []
        while len(held) > self.capacity:
            evicted.append(held.popitem(last=False)[0])
        return evicted

    def copy(self) -> BlockLRU:
        twin = BlockLRU(self.capacity)
        twin.blocks = self.blocks.copy()
        return twin


class PrefixRecord:
    """The blocks a router has sent to each server recently (see the module docstring).

    ``capacity_blocks[s]`` is server ``s``'s LRU size. An index from block to the servers that
    hold it makes a lookup cost the blocks matched, not the servers times the blocks.
    """

    def __init__(self, capacity_blocks: Sequence[int]) -> None:
        self._servers = [BlockLRU(c) for c in capacity_blocks]
        self._holders: dict[int, set[int]] = {}
        self._zeros = np.zeros(len(self._servers))
        self._zeros.flags.writeable = False

    def sent(self, server: int, blocks: Sequence[int]) -> None:
        """The router sent a prompt with ``blocks`` to ``server``."""
        if not blocks:
            return
        for block in blocks:
            self._holders.setdefault(block, set()).add(server)
        for block in self._servers[server].insert(blocks):
            holders = self._holders[block]
            holders.discard(server)
            if not holders:
                del self._holders[block]

    def tokens(self, blocks: Sequence[int], prompt_tokens: int) -> npt.NDArray[np.float64]:
        """Per server, the prompt tokens of the longest prefix of ``blocks`` sent there (as
        :func:`cached_tokens` counts them); a shared read-only zero array when none is."""
        first = self._holders.get(blocks[0]) if blocks else None
        if not first:
            return self._zeros
        depth = dict.fromkeys(first, 1)
        alive = set(first)
        for k in range(1, len(blocks)):
            holders = self._holders.get(blocks[k])
            if not holders:
                break
            alive &= holders
            if not alive:
                break
            for server in alive:
                depth[server] = k + 1
        out = np.zeros(len(self._servers))
        for server, matched in depth.items():
            out[server] = cached_tokens(matched, prompt_tokens)
        return out

    @classmethod
    def for_servers(cls, kv_capacity_tokens: Sequence[int]) -> PrefixRecord:
        """A record sized to the servers' KV caches (in blocks)."""
        return cls([kv // BLOCK_TOKENS for kv in kv_capacity_tokens])
