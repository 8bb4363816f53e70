"""Keeping a long-running server's native heap from growing: glibc malloc arenas and trimming.

Tensors, decoded frames and PyAV buffers live in memory from C ``malloc``. glibc gives each
thread that allocates its own arena (up to 8 per core), and memory freed inside an arena is
kept for reuse rather than returned to the system, so a server whose requests run on many
threads (Gradio's worker pool, the engine's workers, torch's) keeps growing its resident size
although the memory in use does not grow (measured by ``python -m bench.soak --probe``).

- ``limit_arenas`` caps the arena count; call it before the server starts its threads.
- ``release_free_memory`` returns free pages of every arena to the system (``malloc_trim``);
  the app calls it after requests, at most once per ``min_interval_s``.

Both do nothing off glibc (macOS, musl): there the allocator has its own policies.
"""

from __future__ import annotations

import ctypes
import functools
import threading
import time

M_ARENA_MAX = -8  # mallopt parameter number (glibc malloc.h)
SERVER_ARENAS = 2  # arenas for a server process: threads share them instead of growing new ones

_lock = threading.Lock()
_last_trim = 0.0


@functools.cache
def _libc() -> ctypes.CDLL | None:
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return None
    return libc if hasattr(libc, "mallopt") and hasattr(libc, "malloc_trim") else None


def limit_arenas(count: int = SERVER_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``count``; True when the cap was set.

    Arenas that exist stay; the cap stops new ones, so call this before threads start.
    """
    if count < 1:
        raise ValueError(f"the arena count must be at least 1, got {count}")
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, count) == 1)


def release_free_memory(min_interval_s: float = 1.0) -> bool:
    """Give free malloc memory back to the system (all arenas); True when a trim ran.

    Skipped when another trim ran less than ``min_interval_s`` ago (a trim walks every free
    chunk, a few milliseconds on a GB-sized heap).
    """
    global _last_trim
    libc = _libc()
    if libc is None:
        return False
    with _lock:
        now = time.monotonic()
        if now - _last_trim < min_interval_s:
            return False
        _last_trim = now
    libc.malloc_trim(0)
    return True
