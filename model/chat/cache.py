"""Caches used by the chat engine: a bounded LRU, and the KV-cache bookkeeping of a conversation.

A conversation's KV cache is described by one *key* per cached position: the token id for
text, and ``(attachment id, slot branch, index)`` for a media embedding. The next turn's
prompt gets keys the same way; the longest common prefix of the two key lists is what can
be kept, and only the rest is run through the LLM.
"""

from __future__ import annotations

import collections
import dataclasses
import threading
from collections import OrderedDict
from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

import torch
from transformers import DynamicCache


class LRUCache:
    """A thread-safe dict bounded by entry count and, optionally, by bytes; least recently used goes first.

    ``max_bytes`` counts the tensors and arrays an entry holds (``nbytes``): entries differ
    by orders of magnitude (a still image vs. a long video's frames), so a count alone does
    not bound memory. An entry larger than the whole budget is not kept at all.
    """

    def __init__(self, max_items: int, max_bytes: int | None = None):
        if max_items < 0 or (max_bytes is not None and max_bytes < 0):
            raise ValueError(f"cache size must be 0 or more, got {max_items} items, {max_bytes} bytes")
        self.max_items = max_items
        self.max_bytes = max_bytes
        self.bytes = 0  # what the kept entries hold
        self.hits = 0
        self.misses = 0
        self._items: OrderedDict[Hashable, tuple[Any, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            self.misses += 1
            return None

    def put(self, key: Hashable, value: Any) -> None:
        size = nbytes(value) if self.max_bytes is not None else 0
        with self._lock:
            if key in self._items:
                self.bytes -= self._items.pop(key)[1]
            if self.max_bytes is not None and size > self.max_bytes:
                return
            self._items[key] = (value, size)
            self.bytes += size
            while len(self._items) > self.max_items or (self.max_bytes is not None and self.bytes > self.max_bytes):
                self.bytes -= self._items.popitem(last=False)[1][1]

    def pop(self, key: Hashable) -> Any | None:
        with self._lock:
            value, size = self._items.pop(key, (None, 0))
            self.bytes -= size
            return value

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


def nbytes(value: Any, _seen: set | None = None) -> int:
    """Bytes of the tensors and arrays inside ``value`` (dataclasses, dicts, lists, tuples walked;
    a buffer shared by two fields is counted once)."""
    seen = set() if _seen is None else _seen
    if id(value) in seen:
        return 0
    seen.add(id(value))
    if isinstance(value, torch.Tensor):
        if value.device.type == "meta":
            return 0
        storage = value.untyped_storage()
        if ("storage", storage.data_ptr()) in seen:  # a view of a buffer already counted
            return 0
        seen.add(("storage", storage.data_ptr()))
        return storage.nbytes()
    if hasattr(value, "__array_interface__") and hasattr(value, "nbytes"):  # numpy
        return int(value.nbytes)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(nbytes(getattr(value, f.name), seen) for f in dataclasses.fields(value))
    if isinstance(value, dict):
        return sum(nbytes(v, seen) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v, seen) for v in value)
    return 0


class FeatureCache(LRUCache):
    """Frozen encoder outputs, keyed by (content hash, load options, branch, encoder fingerprint),
    with a count of the encoder calls that filled it (the tests and benches read it)."""

    def __init__(self, max_items: int, max_bytes: int | None = None):
        super().__init__(max_items, max_bytes)
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
