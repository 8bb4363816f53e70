"""KV caches shared across stateless requests, found by the longest matching prompt prefix.

An OpenAI-style client resends the whole conversation with every request. The engine keeps
the KV cache each such request ends with (prompt plus answer), described by its prompt keys
(``model/chat/cache.py``: a token id per text position, a content key per media position).
The next request takes the entry sharing the longest prefix with its own keys, crops it there
and runs the LLM over the rest only, so a follow-up pays for its new tokens.

An entry is *taken* (removed) by the request that reuses it, because generation grows the
cache in place; the request puts its own, longer cache back when it ends. Two requests can
therefore never write into one cache.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Hashable

from model.chat.cache import KVState, common_prefix

MIN_SHARED_KEYS = 2  # a shared BOS alone is not worth taking an entry away from another prompt


class PrefixStore:
    """At most ``max_items`` KV caches per engine (least recently used evicted), per model name."""

    def __init__(self, max_items: int):
        if max_items < 0:
            raise ValueError(f"prefix cache size must be 0 or more, got {max_items}")
        self.max_items = max_items
        self.hits = 0  # takes that found a shared prefix
        self.misses = 0
        self._items: OrderedDict[int, tuple[str, KVState]] = OrderedDict()
        self._ids = itertools.count()
        self._lock = threading.Lock()

    def take(self, model: str, keys: list[Hashable]) -> KVState | None:
        """Remove and return the cache of ``model`` sharing the longest prefix with ``keys``
        (None when no entry shares at least ``MIN_SHARED_KEYS``). The caller crops it
        (``KVState.reuse``) and owns it from then on."""
        with self._lock:
            best, best_len = None, MIN_SHARED_KEYS - 1
            for item_id, (name, kv) in self._items.items():
                if name == model:
                    shared = common_prefix(kv.keys, keys)
                    if shared > best_len:
                        best, best_len = item_id, shared
            if best is None:
                self.misses += 1
                return None
            self.hits += 1
            return self._items.pop(best)[1]

    def put(self, model: str, kv: KVState) -> None:
        """Keep ``kv`` (a cache no request uses any more) for later requests to ``model``."""
        if self.max_items == 0 or not kv.keys:
            return
        with self._lock:
            self._items[next(self._ids)] = (model, kv)
            while len(self._items) > self.max_items:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)
