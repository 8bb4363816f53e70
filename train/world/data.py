"""Synthetic-world datasets: scenes with captions and QA, rendered clips and a JSONL manifest.

Manifest layout (``<out_dir>/manifest.jsonl``, one clip per line, paths relative to the file)::

    {"clip_id": "train-00000", "split": "train", "seed": 0, "index": 0,
     "video": "clips/train-00000.mp4", "scene": {...Scene.to_dict()...},
     "captions": ["A large red circle moves to the left. ...", ...],
     "qa": [{"skill": "colour", "question": "...", "answer": "red", "full": "...",
             "keywords": [["red"]], "distractors": ["green", ...], "kind": "open"}, ...]}
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from train.world.qa import QA, captions, make_qa
from train.world.render import render_clip
from train.world.scene import SPLITS, Scene, WorldConfig, sample_scene, scene_rng

MANIFEST_NAME = "manifest.jsonl"


@dataclass
class WorldItem:
    clip_id: str
    split: str
    seed: int
    index: int
    scene: Scene
    captions: list[str]
    qa: list[QA]
    video: str | None = None  # mp4 path relative to the manifest, once rendered

    def to_dict(self) -> dict:
        return {"clip_id": self.clip_id, "split": self.split, "seed": self.seed, "index": self.index,
                "video": self.video, "scene": self.scene.to_dict(), "captions": self.captions,
                "qa": [dataclasses.asdict(q) for q in self.qa]}

    @classmethod
    def from_dict(cls, data: dict) -> WorldItem:
        return cls(clip_id=data["clip_id"], split=data["split"], seed=data["seed"], index=data["index"],
                   scene=Scene.from_dict(data["scene"]), captions=list(data["captions"]),
                   qa=[QA(**q) for q in data["qa"]], video=data.get("video"))


def make_item(seed: int, split: str, index: int, config: WorldConfig | None = None) -> WorldItem:
    """Clip ``index`` of ``split``: same arguments, same scene, captions and questions."""
    rng = scene_rng(seed, split, index)
    scene = sample_scene(rng, split, config)
    return WorldItem(clip_id=f"{split}-{index:05d}", split=split, seed=seed, index=index, scene=scene,
                     captions=captions(scene), qa=make_qa(scene, rng))


def make_dataset(seed: int, n_clips: int, split: str, config: WorldConfig | None = None) -> list[WorldItem]:
    """``n_clips`` items of ``split`` ("train" or "test"); nothing is rendered or written.

    The test split draws from a different seed stream and every test scene holds at least one
    colour/shape pair (``HELDOUT_PAIRS``) that the train split never shows.
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
    if n_clips < 0:
        raise ValueError(f"n_clips must be >= 0, got {n_clips}")
    return [make_item(seed, split, i, config) for i in range(n_clips)]


def write_dataset(items: list[WorldItem], out_dir: str | Path, render: bool = True) -> Path:
    """Render each item to ``out_dir/clips/<clip_id>.mp4`` (if ``render``) and write the manifest."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    manifest = out_dir / MANIFEST_NAME
    with manifest.open("w") as f:
        for item in items:
            if render:
                rel = f"clips/{item.clip_id}.mp4"
                render_clip(item.scene, out_dir / rel)
                item.video = rel
            f.write(json.dumps(item.to_dict()) + "\n")
    return manifest


def read_manifest(path: str | Path) -> list[WorldItem]:
    """Items of a manifest; ``video`` paths are made absolute. Bad lines raise ValueError naming the line."""
    path = Path(path)
    if path.is_dir():
        path = path / MANIFEST_NAME
    items = []
    with path.open() as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                item = WorldItem.from_dict(json.loads(line))
            except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                raise ValueError(f"{path}:{lineno}: not a synthetic-world manifest line ({err}); "
                                 f"re-create it with train.world.data.write_dataset") from err
            if item.video is not None:
                item.video = str(path.parent / item.video)
            items.append(item)
    return items
