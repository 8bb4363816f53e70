"""Open-ended video QA in the layout Video-ChatGPT and Video-LLaVA distribute: MSVD-QA,
MSRVTT-QA, ActivityNet-QA and TGIF-QA.

Facts (Video-ChatGPT ``video_chatgpt/eval/run_inference_activitynet_qa.py``; Video-LLaVA
``videollava/eval/video/run_inference_video_qa.py`` and ``..._qa_act.py``, and its
``TRAIN_AND_VALIDATE.md`` folder tree):

- each benchmark folder holds ``test_q.json`` (a list of ``{"video_name", "question",
  "question_id"}``) and ``test_a.json`` (a list of ``{"answer", "type", "question_id"}``);
- the scripts pair a question with the answer at the same position of ``test_a.json``
  (not by id); we do the same and refuse files whose ids disagree at a position;
- the video is ``<video dir>/<video_name><ext>`` with the first of .mp4, .avi, .mov, .mkv
  that exists; ActivityNet names its files ``v_<video_name>``;
- folders: ``MSVD_Zero_Shot_QA/videos``, ``MSRVTT_Zero_Shot_QA/videos/all``,
  ``TGIF_Zero_Shot_QA/mp4``, ``Activitynet_Zero_Shot_QA/all_test``.

The model is asked the bare question (the scripts add nothing to it).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from evaluation.records import Question

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".gif", ".webm")  # the scripts' four, then TGIF's own


@dataclass(frozen=True)
class Layout:
    folder: str  # the benchmark's folder under GPT_Zero_Shot_QA
    video_dirs: tuple[str, ...]  # where its videos are, relative to that folder (first found wins)
    prefix: str = ""  # added to video_name to make the file name


LAYOUTS = {
    "msvd-qa": Layout("MSVD_Zero_Shot_QA", ("videos", "videos/all")),
    "msrvtt-qa": Layout("MSRVTT_Zero_Shot_QA", ("videos/all", "videos")),
    "activitynet-qa": Layout("Activitynet_Zero_Shot_QA", ("all_test", "videos"), prefix="v_"),
    "tgif-qa": Layout("TGIF_Zero_Shot_QA", ("mp4", "videos", "gifs")),
}


def reader(benchmark: str) -> Callable[[Path], list[Question]]:
    """The reader of one benchmark's layout (``LAYOUTS``)."""
    layout = LAYOUTS[benchmark]

    def read_benchmark(data: Path) -> list[Question]:
        return read(Path(data), benchmark, layout)

    return read_benchmark


def find_root(data: Path, layout: Layout) -> Path:
    """``data`` is the benchmark's folder, or the GPT_Zero_Shot_QA folder that holds it."""
    for root in (data, data / layout.folder):
        if (root / "test_q.json").is_file():
            return root
    raise FileNotFoundError(f"no test_q.json in {data} or {data / layout.folder}; point --data at the "
                            f"{layout.folder} folder (test_q.json, test_a.json and the videos)")


def read(data: Path, benchmark: str, layout: Layout) -> list[Question]:
    root = find_root(data, layout)
    questions = _load_list(root / "test_q.json")
    answers = _load_list(root / "test_a.json")
    if len(questions) != len(answers):
        raise ValueError(f"{root}: test_q.json has {len(questions)} questions but test_a.json "
                         f"{len(answers)} answers; they are paired by position")
    video_dir = next((root / d for d in layout.video_dirs if (root / d).is_dir()), root / layout.video_dirs[0])
    out, seen = [], set()
    for i, (q, a) in enumerate(zip(questions, answers, strict=True)):
        for name in ("video_name", "question"):
            if name not in q:
                raise ValueError(f"{root / 'test_q.json'} entry {i} has no {name!r}")
        if "answer" not in a:
            raise ValueError(f"{root / 'test_a.json'} entry {i} has no 'answer'")
        qid = str(q.get("question_id", f"{q['video_name']}_{i}"))
        if "question_id" in a and "question_id" in q and str(a["question_id"]) != qid:
            raise ValueError(f"{root}: entry {i} pairs question {qid!r} with the answer to "
                             f"{a['question_id']!r}; the two files are not in the same order")
        if qid in seen:
            raise ValueError(f"{root / 'test_q.json'}: question_id {qid!r} appears twice")
        seen.add(qid)
        question = str(q["question"]).strip()
        out.append(Question(
            benchmark=benchmark, task=benchmark, qid=qid,
            media=str(find_video(video_dir, layout.prefix + str(q["video_name"]))),
            question=question, prompt=question, reference=str(a["answer"]).strip(),
            meta={"type": a.get("type")} if "type" in a else {},
        ))
    return out


def find_video(video_dir: Path, stem: str) -> Path:
    """The first existing ``stem + ext``; the .mp4 path when none exists (recorded as missing)."""
    for ext in VIDEO_EXTENSIONS:
        path = video_dir / f"{stem}{ext}"
        if path.is_file():
            return path
    return video_dir / f"{stem}.mp4"


def _load_list(path: Path) -> list[dict]:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; the layout needs test_q.json and test_a.json side by side")
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list) or not all(isinstance(x, dict) for x in data):
        raise ValueError(f"{path} must hold a JSON list of objects")
    return data
