"""Where the soaked app's memory goes: a probe the soak's server process runs on request.

``bench/soak.py --probe`` starts ``tracemalloc`` in the app process and sends it SIGUSR1
after the first 100 requests and at the end; each signal appends a report to a file:

- resident memory vs. what glibc's malloc has handed out (``mallinfo2``: in use, free inside
  its heaps, mmapped) vs. what Python objects hold (``tracemalloc``): RSS far above "in use"
  means fragmentation or freed memory malloc keeps; "in use" far above the Python heap means
  native buffers (tensors);
- the Gradio session states kept (each holds a copy of the page config and the tab's state);
- the engine's caches (entries and bytes);
- objects by type (``gc``) and the source lines whose allocations grew most since the last report.

Tracing slows the app down; RSS of a probed run is a little higher than of a plain one.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import signal
import tracemalloc
from pathlib import Path
from typing import Any

MB = 1 << 20


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def malloc_stats() -> dict[str, float] | None:
    """glibc's heap figures in MB (None off glibc): in use, free inside heaps, mmapped chunks."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallinfo2.restype = _MallInfo2
    except (OSError, AttributeError):
        return None
    info = libc.mallinfo2()
    return {"in_use": (info.uordblks + info.hblkhd) / MB, "free_in_heaps": info.fordblks / MB,
            "mmapped": info.hblkhd / MB, "heaps": info.arena / MB}


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def mapped_rss() -> dict[str, float]:
    """Resident MB by kind of mapping (/proc/self/smaps): malloc's main heap, anonymous mappings
    (thread arenas, large malloc chunks, Python's arenas, thread stacks), shared libraries, other files."""
    out: collections.Counter = collections.Counter()
    kind = "anonymous"
    for line in Path("/proc/self/smaps").read_text().splitlines():
        first = line.split(maxsplit=6)
        if "-" in first[0] and len(first) >= 5 and ":" in first[3]:  # a mapping header
            name = first[5] if len(first) > 5 else ""
            kind = ("heap" if name == "[heap]" else "anonymous" if not name else "stack" if name == "[stack]"
                    else "libraries" if ".so" in name else "other files" if name.startswith("/") else name)
        elif line.startswith("Rss:"):
            out[kind] += int(line.split()[1]) / 1024
    return dict(out)


def _type_counts() -> collections.Counter:
    return collections.Counter(type(o).__qualname__ for o in gc.get_objects())


class Probe:
    """Reports to ``path`` on SIGUSR1 (the handler runs in the main thread between its sleeps)."""

    def __init__(self, path: Path, demo: Any, engine: Any, frames: int = 8):
        self.path, self.demo, self.engine = Path(path), demo, engine
        self.snapshot: tracemalloc.Snapshot | None = None
        self.types: collections.Counter | None = None
        self.n = 0
        tracemalloc.start(frames)
        self.path.write_text("")

    def install(self) -> None:
        signal.signal(signal.SIGUSR1, lambda *_: self.report())

    def report(self) -> None:
        gc.collect()
        self.n += 1
        lines = [f"== probe report {self.n}", f"rss {_rss_mb():.0f} MB"]
        traced, peak = tracemalloc.get_traced_memory()
        lines.append(f"python heap (tracemalloc) {traced / MB:.0f} MB (peak {peak / MB:.0f} MB)")
        stats = malloc_stats()
        if stats:
            lines.append("malloc " + ", ".join(f"{k} {v:.0f} MB" for k, v in stats.items()))
        mapped = sorted(mapped_rss().items())
        lines.append("rss by mapping " + ", ".join(f"{k} {v:.0f} MB" for k, v in mapped if v >= 1))
        lines.append(f"rss after malloc_trim(0) {self._trimmed_rss():.0f} MB (what freed-but-kept malloc memory costs)")
        lines += self._app_lines()
        types = _type_counts()
        lines.append("objects by type (count, change since last report): " + ", ".join(
            f"{name} {count} ({count - (self.types or {}).get(name, 0):+d})"
            for name, count in types.most_common(15)))
        if self.types is not None:
            grown = sorted(types, key=lambda t: types[t] - self.types.get(t, 0), reverse=True)[:15]
            lines.append("objects grown most: " + ", ".join(f"{t} {types[t] - self.types.get(t, 0):+d}"
                                                            for t in grown))
        snapshot = tracemalloc.take_snapshot().filter_traces([tracemalloc.Filter(False, tracemalloc.__file__)])
        if self.snapshot is not None:
            lines.append("allocations grown most since the last report (by line):")
            for stat in snapshot.compare_to(self.snapshot, "lineno")[:15]:
                lines.append(f"  {stat.size_diff / MB:+8.2f} MB {stat.count_diff:+7d} blocks  {stat.traceback[0]}")
            lines.append("allocations grown most (by call stack, outermost frames of ours):")
            for stat in snapshot.compare_to(self.snapshot, "traceback")[:5]:
                lines.append(f"  {stat.size_diff / MB:+8.2f} MB {stat.count_diff:+7d} blocks")
                lines += [f"      {frame}" for frame in stat.traceback.format()[-8:]]
        self.snapshot, self.types = snapshot, types
        with self.path.open("a") as out:
            out.write("\n".join(lines) + "\n")

    @staticmethod
    def _trimmed_rss() -> float:
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):
            pass
        return _rss_mb()

    def _app_lines(self) -> list[str]:
        out = []
        holder = getattr(self.demo, "state_holder", None)
        if holder is not None:
            sessions = list(holder.session_data.values())
            states = sum(len(s.state_data) for s in sessions)
            out.append(f"gradio sessions kept {len(sessions)} (capacity {holder.capacity}), "
                       f"state values {states}")
        e = self.engine
        out.append(f"engine: decoded media {len(e.loaded)} ({e.loaded.bytes / MB:.0f} MB), features "
                   f"{len(e.features)} ({e.features.bytes / MB:.0f} MB), prefix KV {len(e.prefixes)}, "
                   f"conversations with KV {len(e._kv_owners)}")
        return out
