"""Votes from the Compare tab: one JSON object per line, appended, with everything voted on.

A line holds the vote, the models in the order shown, the question, the media file's name
and SHA-256 (so the same clip can be found again), the settings and every answer. The
tally reads the file back, so it survives restarts and counts other processes' votes too.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# vote -> label on its button. "left"/"right" are the two leftmost answers on the page.
VOTES = {
    "left": "Left is better",
    "right": "Right is better",
    "tie": "Tie",
    "both_bad": "Both are bad",
}


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class VoteLog:
    path: Path

    def __post_init__(self) -> None:
        self.path = Path(self.path)
        self._lock = threading.Lock()  # one writer at a time within this process

    def append(self, vote: str, *, models: list[str], answers: list[str], question: str,
               media_path: str | None, settings: dict[str, Any] | None = None) -> dict[str, Any]:
        """Write one vote; raises ValueError on a vote that does not name two answers."""
        if vote not in VOTES:
            raise ValueError(f"unknown vote {vote!r}; votes: {', '.join(VOTES)}")
        if len(models) < 2 or len(answers) != len(models):
            raise ValueError("compare at least two models before voting")
        record = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "vote": vote,
            "left": models[0],
            "right": models[1],
            "models": list(models),
            "answers": list(answers),
            "question": question,
            "media": Path(media_path).name if media_path else None,
            "media_sha256": file_sha256(media_path) if media_path else None,
            "settings": settings or {},
        }
        line = json.dumps(record, ensure_ascii=False)
        with self._lock:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return record

    def records(self) -> list[dict[str, Any]]:
        """Every vote so far; a damaged line (say, a crash mid-write) is skipped."""
        if not self.path.exists():
            return []
        out = []
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def tally(self) -> list[list[Any]]:
        """Rows of [model, wins, losses, ties, both bad, votes], most wins first."""
        counts: dict[str, Counter] = {}
        for rec in self.records():
            left, right, vote = rec.get("left"), rec.get("right"), rec.get("vote")
            for name in (left, right):
                counts.setdefault(name, Counter())["votes"] += 1
            if vote == "left":
                counts[left]["wins"] += 1
                counts[right]["losses"] += 1
            elif vote == "right":
                counts[right]["wins"] += 1
                counts[left]["losses"] += 1
            elif vote == "tie":
                counts[left]["ties"] += 1
                counts[right]["ties"] += 1
            elif vote == "both_bad":
                counts[left]["both_bad"] += 1
                counts[right]["both_bad"] += 1
        rows = [[name, c["wins"], c["losses"], c["ties"], c["both_bad"], c["votes"]]
                for name, c in counts.items()]
        return sorted(rows, key=lambda r: (-r[1], r[0]))


TALLY_HEADERS = ["model", "wins", "losses", "ties", "both bad", "votes"]
