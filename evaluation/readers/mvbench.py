"""MVBench: 20 temporal tasks, one JSON file per task, multiple choice with ``candidates``.

Facts (OpenGVLab/Ask-Anything ``video_chat2/mvbench.ipynb`` and ``MVBENCH.md``; the data on
the Hugging Face dataset ``OpenGVLab/MVBench``):

- ``json/<task>.json`` is a list of ``{"video", "question", "candidates", "answer"}``, the
  answer being the text of one candidate; four tasks also give ``"start"``/``"end"``
  (seconds), the part of the video the question is about;
- each task's videos live in its own source folder (``TASKS`` below, from the notebook's
  ``data_list``), under ``video/``; Episodic Reasoning gives folders of frames, not files;
- frames: for the tasks with ``start``/``end`` (``bound``), the notebook's ``get_index``
  samples only inside that window (frames ``round(start * fps)`` to ``round(end * fps)``, the
  middle of T equal segments); such questions carry ``window`` and the runner loads their
  frames from it (``LoadOptions.start``/``end``, ``model/media/video.py``);
- the prompt (``infer_mvbench`` with the notebook's arguments, ``system_llm=True``): the system
  text is the conversation's system prompt and also starts the question, which is
  ``Question: ...\\nOptions:\\n(A) ...\\n(B) ...`` then ``\\nOnly give the best option.``;
  the answer is pre-filled with ``Best option:(`` (``answer_prompt``), and the script scores
  ``(`` (``return_prompt``) + the first line the model writes.

The run's ``--prompt official`` (the default for MVBench) asks that way: ``system``,
``prefill`` and ``prefill_kept`` below; ``--prompt plain`` asks ``prompt`` alone (system text,
question and options in one message, the model's own system prompt, no pre-filled answer), so
the model writes the letter itself. Both are scored by the official first-word rule and the
corrected reading (``scoring/choice.py``).

Not reproduced: the media goes where our model's template puts it (the media message joined to
the question, as Video-LLaMA does), not in a turn of its own; frames of questions without a
window are sampled as Video-LLaMA does (segment starts), not segment middles.
"""

from __future__ import annotations

import json
from pathlib import Path

from evaluation.records import LETTERS, Question

SYSTEM = ("Carefully watch the video and pay attention to the cause and sequence of events, the detail and "
          "movement of objects, and the action and pose of persons. Based on your observations, select the best "
          "option that accurately addresses the question.\n")
QUESTION_SUFFIX = "\nOnly give the best option."
ANSWER_PREFILL, PREFILL_KEPT = "Best option:(", "("  # the notebook's answer_prompt and return_prompt

# task -> (json file, video folder under video/, media kind, has start/end). From data_list.
TASKS: dict[str, tuple[str, str, str, bool]] = {
    "Action Sequence": ("action_sequence.json", "star/Charades_v1_480", "video", True),
    "Action Prediction": ("action_prediction.json", "star/Charades_v1_480", "video", True),
    "Action Antonym": ("action_antonym.json", "ssv2_video", "video", False),
    "Fine-grained Action": ("fine_grained_action.json", "Moments_in_Time_Raw/videos", "video", False),
    "Unexpected Action": ("unexpected_action.json", "FunQA_test/test", "video", False),
    "Object Existence": ("object_existence.json", "clevrer/video_validation", "video", False),
    "Object Interaction": ("object_interaction.json", "star/Charades_v1_480", "video", True),
    "Object Shuffle": ("object_shuffle.json", "perception/videos", "video", False),
    "Moving Direction": ("moving_direction.json", "clevrer/video_validation", "video", False),
    "Action Localization": ("action_localization.json", "sta/sta_video", "video", True),
    "Scene Transition": ("scene_transition.json", "scene_qa/video", "video", False),
    "Action Count": ("action_count.json", "perception/videos", "video", False),
    "Moving Count": ("moving_count.json", "clevrer/video_validation", "video", False),
    "Moving Attribute": ("moving_attribute.json", "clevrer/video_validation", "video", False),
    "State Change": ("state_change.json", "perception/videos", "video", False),
    "Fine-grained Pose": ("fine_grained_pose.json", "nturgbd", "video", False),
    "Character Order": ("character_order.json", "perception/videos", "video", False),
    "Egocentric Navigation": ("egocentric_navigation.json", "vlnqa", "video", False),
    "Episodic Reasoning": ("episodic_reasoning.json", "tvqa/frames_fps3_hq", "frame", True),
    "Counterfactual Inference": ("counterfactual_inference.json", "clevrer/video_validation", "video", False),
}


def prompt_for(question: str, candidates: list[str]) -> str:
    """The notebook's question text (system text first, as with ``system_llm=True``)."""
    lines = [f"Question: {question}", "Options:"]
    lines += [f"({LETTERS[i]}) {c}" for i, c in enumerate(candidates)]
    return SYSTEM + "\n".join(lines) + QUESTION_SUFFIX


def read(data: Path) -> list[Question]:
    """Every task whose JSON file is under ``data/json`` (or ``data``); at least one must be."""
    data = Path(data)
    json_dir = data / "json" if (data / "json").is_dir() else data
    found = [(task, spec) for task, spec in TASKS.items() if (json_dir / spec[0]).is_file()]
    if not found:
        raise FileNotFoundError(f"no MVBench task file (e.g. {TASKS['Action Sequence'][0]}) in {json_dir}; "
                                "point --data at the folder holding json/ and video/")
    video_root = data / "video" if (data / "video").is_dir() else data
    out = []
    for task, (name, folder, _kind, bounded) in found:
        entries = json.loads((json_dir / name).read_text(encoding="utf-8"))
        if not isinstance(entries, list):
            raise ValueError(f"{json_dir / name} must hold a JSON list")
        for i, entry in enumerate(entries):
            out.append(_question(task, name, folder, bounded, i, entry, video_root))
    return out


def _question(task: str, name: str, folder: str, bounded: bool, i: int, entry: dict, video_root: Path) -> Question:
    where = f"{name} entry {i}"
    for key in ("video", "question", "candidates", "answer"):
        if key not in entry:
            raise ValueError(f"{where} has no {key!r}")
    candidates = [str(c) for c in entry["candidates"]]
    if str(entry["answer"]) not in candidates:
        raise ValueError(f"{where}: the answer {entry['answer']!r} is not one of its candidates")
    if len(candidates) > len(LETTERS):
        raise ValueError(f"{where} has {len(candidates)} candidates; at most {len(LETTERS)} are supported")
    window = None
    if bounded and "start" in entry and "end" in entry:
        window = (float(entry["start"]), float(entry["end"]))
    return Question(
        benchmark="mvbench", task=task, qid=f"{Path(name).stem}/{i}",
        media=str(video_root / folder / str(entry["video"])),
        question=str(entry["question"]), prompt=prompt_for(str(entry["question"]), candidates),
        reference=str(entry["answer"]), options=tuple(candidates),
        answer_index=candidates.index(str(entry["answer"])), mc_rule="mvbench", window=window,
        system=SYSTEM, prefill=ANSWER_PREFILL, prefill_kept=PREFILL_KEPT,
    )
