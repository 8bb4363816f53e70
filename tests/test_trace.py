"""The turn trace is typed data: stages that did not run stay None and are left out of the tables."""

import json

from app import inspect_view
from model.chat.generate import GenerationSettings
from model.chat.trace import MediaInfo, TurnTrace


def _trace() -> TurnTrace:
    trace = TurnTrace(model="m", template="llama2", settings=GenerationSettings(max_new_tokens=7))
    trace.timings.queue_wait = 0.002
    trace.timings.embed = 0.010
    trace.add_time("adapters", 0.25)
    trace.add_time("adapters", 0.5)  # both branches
    trace.shapes.prompt_embeds = [1, 30, 48]
    trace.tokens.prompt, trace.tokens.new = 30, 4
    trace.media = MediaInfo(path="a.mp4", kind="video", sound=False)
    return trace


def test_timing_rows_are_the_stages_that_ran_in_pipeline_order():
    trace = _trace()
    assert trace.timings.rows() == [("queue_wait", 0.002), ("adapters", 0.75), ("embed", 0.010)]
    assert inspect_view.timing_rows(trace) == [["queue_wait", 2.0], ["adapters", 750.0], ["embed", 10.0]]
    assert inspect_view.timing_rows(None) == [] and inspect_view.stages_from_trace(None) == []


def test_text_only_trace_draws_only_the_text_stages():
    stages = inspect_view.stages_from_trace(_trace())
    assert [s["lane"] for s in stages] == ["text", "text"]
    assert stages[0]["detail"].startswith("1 x 30 x 48 · 30 tokens (0 media, 0 reused")
    assert stages[1]["detail"].startswith("4 new tokens")


def test_trace_is_plain_data_for_json():
    data = json.loads(json.dumps(_trace().to_dict()))
    assert data["settings"]["max_new_tokens"] == 7 and data["media"]["sound"] is False
    assert data["timings"]["vision_encode"] is None and data["tokens"]["new"] == 4
