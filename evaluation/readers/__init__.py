"""Benchmark readers: one module per file layout, each a function ``read(data_dir) -> list[Question]``.

``SUITES`` below is the whole table of ``--suite`` names; the toy world is built by the runner's
command (it renders its clips instead of reading a folder).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evaluation.readers import egoschema, mvbench, nextqa, videochatgpt, videomme
from evaluation.records import Question

# --suite name -> reader. Plain data: the layouts themselves live in each module.
SUITES: dict[str, Callable[[Path], list[Question]]] = {
    "msvd-qa": videochatgpt.reader("msvd-qa"),
    "msrvtt-qa": videochatgpt.reader("msrvtt-qa"),
    "activitynet-qa": videochatgpt.reader("activitynet-qa"),
    "tgif-qa": videochatgpt.reader("tgif-qa"),
    "mvbench": mvbench.read,
    "video-mme": videomme.read,
    "nextqa": nextqa.read,
    "egoschema": egoschema.read,
}
assert set(videochatgpt.LAYOUTS) <= set(SUITES), "every Video-ChatGPT layout needs a suite name"
