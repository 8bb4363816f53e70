"""Caches used by the chat engine: a bounded LRU, and the KV-cache bookkeeping of a conversation.

A conversation's KV cache is described by one *key* per cached position: the token id for
text, and ``(attachment id, slot branch, index)`` for a media embedding. The next turn's
prompt gets keys the same way; the longest common prefix of the two key lists is what can
be kept, and only the rest is run through the LLM.
"""

from __future__ import annotations

import collections
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache


class LRUCache:
    """A thread-safe dict that keeps at most ``max_items`` entries, evicting the least recently used."""

    def __init__(self, max_items: int):
        if max_items < 0:
            raise ValueError(f"cache size must be 0 or more, got {max_items}")
        self.max_items = max_items
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            self._items.move_to_end(key)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def pop(self, key: Hashable) -> Any | None:
        with self._lock:
            return self._items.pop(key, None)

    def oldest(self) -> Hashable | None:
        """The least recently used key (None when empty)."""
        with self._lock:
            return next(iter(self._items), None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._items


class FeatureCache(LRUCache):
    """Frozen encoder outputs, keyed by (content hash, load options, branch, encoder fingerprint),
    with a count of the encoder calls that filled it (the tests and benches read it)."""

    def __init__(self, max_items: int):
        super().__init__(max_items)
        self.encoder_calls: collections.Counter = collections.Counter()

    def count_encoder_call(self, branch: str) -> None:
        with self._lock:
            self.encoder_calls[branch] += 1


@dataclass
class KVState:
    """A conversation's KV cache and what each cached position holds."""

    cache: DynamicCache = field(default_factory=DynamicCache)
    keys: list[Hashable] = field(default_factory=list)
    adapter: str | None = None  # the LLM adapter the cached keys/values were computed with (None: none)

    def reuse(self, keys: list[Hashable]) -> int:
        """Crop the cache to the longest prefix shared with ``keys``; return its length.

        At least one position is always left to run, because the last prompt position's
        logits give the first answer token.
        """
        n = common_prefix(self.keys, keys)
        n = min(n, len(keys) - 1, self.cache.get_seq_length())
        if n <= 0:
            self.cache, self.keys = DynamicCache(), []
            return 0
        extra = self.cache.get_seq_length() - n
        if extra > 0:
            self.cache.crop(-extra)  # transformers 5: a negative count removes that many positions
        self.keys = self.keys[:n]
        return n


def common_prefix(a: list[Hashable], b: list[Hashable]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


@dataclass
class Piece:
    """One run of the prompt: token ids (text) or media embeddings, with their keys."""

    keys: list[Hashable]
    ids: list[int] | None = None  # text
    embeds: torch.Tensor | None = None  # media, (1, n, D)

    def __len__(self) -> int:
        return len(self.keys)

    def tail(self, start: int) -> Piece:
        """The part of this piece from position ``start`` on."""
        if self.ids is not None:
            return Piece(self.keys[start:], ids=self.ids[start:])
        return Piece(self.keys[start:], embeds=self.embeds[:, start:])

    def tensor(self) -> torch.Tensor:
        """What ``VideoLlama.embed_interleaved`` takes: ids (1, n) or embeddings (1, n, D)."""
        if self.ids is not None:
            return torch.tensor([self.ids], dtype=torch.long)
        return self.embeds


def pieces_after(pieces: list[Piece], start: int) -> list[Piece]:
    """The prompt from position ``start`` on (pieces cut where needed, empty ones dropped)."""
    out, pos = [], 0
    for piece in pieces:
        end = pos + len(piece)
        if end > start and len(piece):
            out.append(piece.tail(max(0, start - pos)))
        pos = end
    return out
