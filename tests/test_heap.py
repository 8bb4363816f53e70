"""model/chat/heap.py: the malloc arena cap and the throttled trim the app runs after requests."""

from __future__ import annotations

import ctypes.util

import pytest

from model.chat import heap

GLIBC = ctypes.util.find_library("c") == "libc.so.6" and heap._libc() is not None


def test_arena_count_must_be_positive():
    with pytest.raises(ValueError, match="at least 1"):
        heap.limit_arenas(0)


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_limit_and_trim_run_on_glibc():
    assert heap.limit_arenas(heap.SERVER_ARENAS) is True
    assert heap.release_free_memory(min_interval_s=0) is True


@pytest.mark.skipif(not GLIBC, reason="glibc only")
def test_trims_closer_than_the_interval_are_skipped():
    assert heap.release_free_memory(min_interval_s=0) is True  # runs, and sets the time of the last trim
    assert heap.release_free_memory(min_interval_s=3600) is False
    assert heap.release_free_memory(min_interval_s=0) is True
