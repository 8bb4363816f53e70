"""LRUCache: eviction order, recency refresh on get and put, and the byte budget."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from model.chat.cache import LRUCache, nbytes


def test_evicts_the_least_recently_used_entry_first():
    cache = LRUCache(3)
    for key in "abc":
        cache.put(key, key.upper())
    cache.put("d", "D")
    assert "a" not in cache and [k for k in "bcd" if k in cache] == ["b", "c", "d"]
    assert cache.oldest() == "b"


def test_get_and_put_refresh_recency():
    cache = LRUCache(3)
    for key in "abc":
        cache.put(key, 1)
    assert cache.get("a") == 1  # a is now the most recent: b goes next
    cache.put("d", 1)
    assert "a" in cache and "b" not in cache
    cache.put("c", 2)  # overwriting refreshes too: the order is now a, d, c
    cache.put("e", 1)
    assert "a" not in cache and [k for k in "cde" if k in cache] == ["c", "d", "e"]
    assert cache.get("c") == 2 and cache.hits == 2 and cache.get("zz") is None and cache.misses == 1


def test_byte_budget_evicts_by_size_and_refuses_an_entry_larger_than_the_budget():
    mb = 1 << 20
    cache = LRUCache(100, max_bytes=3 * mb)
    cache.put("a", torch.zeros(mb // 4))  # 1 MiB of float32
    cache.put("b", np.zeros(mb, dtype=np.uint8))  # 1 MiB
    assert cache.bytes == 2 * mb
    cache.get("a")  # a is recent: b must go when c needs room
    cache.put("c", {"frames": torch.zeros(mb // 2)})  # 2 MiB inside a dict
    assert "b" not in cache and "a" in cache and "c" in cache and cache.bytes == 3 * mb
    cache.put("huge", torch.zeros(mb))  # 4 MiB > the whole budget: not kept, nothing evicted
    assert "huge" not in cache and len(cache) == 2 and cache.bytes == 3 * mb
    assert cache.pop("a") is not None and cache.bytes == 2 * mb
    cache.put("c", torch.zeros(1))  # replacing an entry releases its old size
    assert cache.bytes == 4


def test_zero_items_keeps_nothing():
    cache = LRUCache(0)
    cache.put("a", 1)
    assert len(cache) == 0 and cache.get("a") is None


@dataclasses.dataclass
class _Media:
    frames: torch.Tensor
    view: torch.Tensor
    notes: list


def test_nbytes_walks_containers_and_counts_a_shared_buffer_once():
    frames = torch.zeros(10, 100)  # 4000 bytes
    media = _Media(frames, frames[:2], ["a", np.zeros(50, dtype=np.uint8)])
    assert nbytes(media) == 4000 + 50
    assert nbytes({"x": [media, (frames,)]}) == 4050
