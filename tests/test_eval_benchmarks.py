"""Benchmark readers on hand-written records in each layout, the scorers (official rules and
the corrected reading), the GPT-judge protocol against a stub OpenAI-compatible server, and the
ranking from votes."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from evaluation.ranking import bradley_terry, rank, to_elo
from evaluation.readers import SUITES, egoschema, mvbench, nextqa, videochatgpt, videomme
from evaluation.records import AnswerRecord, Question
from evaluation.scoring import score
from evaluation.scoring.choice import extract_choice, mvbench_official, videomme_official
from evaluation.scoring.judge import Judge, parse_reply
from evaluation.scoring.open_ended import string_match
from evaluation.summary import markdown, summarize
from tests import media_factory


def _write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _clip(path: Path, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return media_factory.video(path, duration=0.4, **kwargs)


# -- readers -----------------------------------------------------------------------------------

def test_msvd_reader_pairs_questions_and_answers_by_position_and_finds_the_videos(tmp_path):
    root = tmp_path / "GPT_Zero_Shot_QA" / "MSVD_Zero_Shot_QA"
    _clip(root / "videos" / "-4wsuPCjDBc_5_15.avi", vcodec="mpeg4")
    _clip(root / "videos" / "vid2.mp4")
    _write(root / "test_q.json", [
        {"video_name": "-4wsuPCjDBc_5_15", "question": "what is the man doing?", "question_id": "v_0"},
        {"video_name": "vid2", "question": "who is singing?", "question_id": "v_1"},
        {"video_name": "gone", "question": "what falls?", "question_id": "v_2"}])
    _write(root / "test_a.json", [{"answer": "cooking", "type": 3, "question_id": "v_0"},
                                  {"answer": "woman", "type": 2, "question_id": "v_1"},
                                  {"answer": "rain", "type": 0, "question_id": "v_2"}])
    questions = SUITES["msvd-qa"](tmp_path / "GPT_Zero_Shot_QA")  # the parent folder works too
    assert [(q.qid, q.reference, Path(q.media).name) for q in questions] == [
        ("v_0", "cooking", "-4wsuPCjDBc_5_15.avi"), ("v_1", "woman", "vid2.mp4"), ("v_2", "rain", "gone.mp4")]
    assert questions[0].prompt == "what is the man doing?" and questions[0].kind == "open"
    assert not Path(questions[2].media).exists()  # the runner records it as missing
    _write(root / "test_a.json", [{"answer": "woman", "question_id": "v_1"},
                                  {"answer": "cooking", "question_id": "v_0"}, {"answer": "rain"}])
    with pytest.raises(ValueError, match="not in the same order"):
        SUITES["msvd-qa"](root)


def test_activitynet_reader_adds_the_v_prefix_and_msrvtt_looks_in_videos_all(tmp_path):
    anet = tmp_path / "Activitynet_Zero_Shot_QA"
    _clip(anet / "all_test" / "v_abc123.mp4")
    _write(anet / "test_q.json", [{"video_name": "abc123", "question": "is it day?", "question_id": "abc123_1"}])
    _write(anet / "test_a.json", [{"answer": "yes", "type": 3, "question_id": "abc123_1"}])
    (q,) = videochatgpt.reader("activitynet-qa")(anet)
    assert Path(q.media).name == "v_abc123.mp4" and Path(q.media).is_file()
    msrvtt = tmp_path / "MSRVTT_Zero_Shot_QA"
    _clip(msrvtt / "videos" / "all" / "video7010.mp4")
    _write(msrvtt / "test_q.json", [{"video_name": "video7010", "question": "what is shown?", "question_id": 0}])
    _write(msrvtt / "test_a.json", [{"answer": "car", "question_id": 0}])
    (q,) = SUITES["msrvtt-qa"](msrvtt)
    assert Path(q.media).is_file() and q.qid == "0" and q.benchmark == "msrvtt-qa"


def test_tgif_reader_takes_the_mp4_folder(tmp_path):
    root = tmp_path / "TGIF_Zero_Shot_QA"
    _clip(root / "mp4" / "tumblr_nk172bbdPI1u1lr18o1_250.mp4")
    _write(root / "test_q.json", [{"video_name": "tumblr_nk172bbdPI1u1lr18o1_250", "question": "what is the color "
                                   "of the cat?", "question_id": "tumblr_nk172bbdPI1u1lr18o1_250_0"}])
    _write(root / "test_a.json", [{"answer": "white", "question_id": "tumblr_nk172bbdPI1u1lr18o1_250_0"}])
    (q,) = SUITES["tgif-qa"](root)
    assert Path(q.media).is_file() and q.reference == "white"


def test_mvbench_reader_reads_each_task_file_with_candidates_and_bounds(tmp_path):
    _clip(tmp_path / "video" / "star" / "Charades_v1_480" / "6H78U.mp4")
    _clip(tmp_path / "video" / "clevrer" / "video_validation" / "video_10000.mp4")
    _write(tmp_path / "json" / "action_sequence.json", [
        {"video": "6H78U.mp4", "question": "What happened after the person took the food?",
         "candidates": ["Ate the medicine.", "Tidied up the blanket.", "Put down the cup/glass/bottle.",
                        "Took the box."], "answer": "Ate the medicine.", "start": 11.1, "end": 19.6}])
    _write(tmp_path / "json" / "moving_direction.json", [
        {"video": "video_10000.mp4", "question": "What direction is the cyan sphere moving?",
         "candidates": ["Up and to the left.", "Down and to the right.", "Not moving at all."],
         "answer": "Not moving at all."}])
    questions = mvbench.read(tmp_path)
    assert [(q.task, q.answer_letter, q.window) for q in questions] == [
        ("Action Sequence", "A", (11.1, 19.6)), ("Moving Direction", "C", None)]
    q = questions[1]
    assert all(Path(x.media).is_file() for x in questions) and q.mc_rule == "mvbench"
    assert q.prompt.startswith(mvbench.SYSTEM)
    assert "Question: What direction is the cyan sphere moving?\nOptions:\n(A) Up and to the left.\n" in q.prompt
    assert q.prompt.endswith("(C) Not moving at all.\nOnly give the best option.")
    _write(tmp_path / "json" / "moving_count.json", [{"video": "x.mp4", "question": "How many?",
                                                     "candidates": ["1", "2"], "answer": "3"}])
    with pytest.raises(ValueError, match="not one of its candidates"):
        mvbench.read(tmp_path)


def _videomme_rows(tmp_path):
    _clip(tmp_path / "data" / "fFjv93ACGo8.mp4")
    return [{"video_id": "001", "duration": "short", "domain": "Knowledge", "sub_category": "Humanity & History",
             "url": "https://www.youtube.com/watch?v=fFjv93ACGo8", "videoID": "fFjv93ACGo8", "question_id": "001-1",
             "task_type": "Counting Problem", "question": "How many porcelain jars were discovered?",
             "options": ["A. 4.", "B. 9.", "C. 5.", "D. 13."], "answer": "B"}]


def test_videomme_reader_reads_the_parquet_file(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = _videomme_rows(tmp_path)
    (tmp_path / "videomme").mkdir()
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "videomme" / "test-00000-of-00001.parquet")
    (q,) = videomme.read(tmp_path)
    assert (q.task, q.qid, q.options, q.answer_letter, q.reference) == ("short", "001-1", ("4.", "9.", "5.", "13."),
                                                                      "B", "9.")
    assert Path(q.media).is_file() and q.meta["task_type"] == "Counting Problem"
    assert q.prompt.splitlines() == [videomme.INSTRUCTION, "How many porcelain jars were discovered?", "A. 4.",
                                     "B. 9.", "C. 5.", "D. 13.", "The best answer is:"]


def test_videomme_reader_reads_the_official_nested_json(tmp_path):
    _clip(tmp_path / "video" / "002.mp4")
    _write(tmp_path / "results.json", [{"video_id": "002", "duration_category": "long", "video_category": "Film",
                                        "questions": [{"question_id": "002-3", "task_type": "OCR Problems",
                                                       "question": "What is written?", "answer": "D",
                                                       "choices": ["A. x", "B. y", "C. z", "D. w"]}]}])
    (q,) = videomme.read(tmp_path)
    assert (q.task, q.answer_index, Path(q.media).is_file()) == ("long", 3, True)


def _scored(q: Question, reply: str) -> AnswerRecord:
    """The answer line the runner writes for ``reply`` (no model needed to test the scoring)."""
    verdicts, extracted = score(q, reply)
    return AnswerRecord(model="m", key=q.key, benchmark=q.benchmark, task=q.task, question=q.question,
                        reference=q.reference, media=q.media, answer=reply, verdicts=verdicts, extracted=extracted)


NEXTQA_HEADER = "video,frame_count,width,height,question,answer,qid,type,a0,a1,a2,a3,a4\n"


def test_nextqa_reader_reads_the_csv_finds_videos_through_the_map_and_groups_the_types(tmp_path):
    nextqa_dir = tmp_path / "dataset" / "nextqa"  # the repository's layout, NExTVideo/ at its root
    _clip(tmp_path / "NExTVideo" / "1101" / "4010069381.mp4")
    _clip(tmp_path / "NExTVideo" / "0016" / "2834146886.mp4")
    nextqa_dir.mkdir(parents=True)
    (nextqa_dir / "val.csv").write_text(
        NEXTQA_HEADER
        + "4010069381,369,640,480,how do the two man play the drums,3,6,CH,roll the handle,tap their feet,"
          "strum the string,hit with sticks,pat with hand\n"
        + "2834146886,1881,496,370,what does the dog do before going to the cushion,1,8,TP,drink again,"
          "shake its body,smell the cat,wag its tail,lie down\n"
        + "2834146886,1881,496,370,where is this video taken,0,9,DL,living room,park,beach,kitchen,garden\n"
        + "9999999999,300,640,480,how many babies are there,2,0,DC,one,two,three,four,five\n")
    _write(nextqa_dir / "map_vid_vidorID.json", {"4010069381": "1101/4010069381", "2834146886": "0016/2834146886",
                                                 "9999999999": "0001/9999999999"})
    questions = SUITES["nextqa"](nextqa_dir)
    assert [(q.qid, q.task, q.meta["type"], q.answer_letter) for q in questions] == [
        ("4010069381_6", "causal", "CH", "D"), ("2834146886_8", "temporal", "TN", "B"),
        ("2834146886_9", "descriptive", "DL", "A"), ("9999999999_0", "descriptive", "DC", "C")]
    assert [Path(q.media).is_file() for q in questions] == [True, True, True, False]  # the last: recorded missing
    assert questions[0].media.endswith("NExTVideo/1101/4010069381.mp4") and questions[0].reference == "hit with sticks"
    assert questions[0].prompt == mvbench.prompt_for("how do the two man play the drums", list(questions[0].options))
    assert questions[0].prompt.endswith("(E) pat with hand\nOnly give the best option.")
    assert questions[0].mc_rule == "mvbench"
    (nextqa_dir / "test.csv").write_text(NEXTQA_HEADER + "4010069381,369,640,480,why is he here,0,1,CW,a,b,c,d,e\n")
    (q,) = nextqa.read(nextqa_dir / "test.csv")  # another split: its CSV file's path
    assert (q.qid, q.task, Path(q.media).is_file()) == ("4010069381_1", "causal", True)
    (nextqa_dir / "test.csv").write_text(NEXTQA_HEADER + "4010069381,369,640,480,why,5,1,CW,a,b,c,d,e\n")
    with pytest.raises(ValueError, match="not an option index"):
        nextqa.read(nextqa_dir / "test.csv")
    (nextqa_dir / "test.csv").write_text(NEXTQA_HEADER + "4010069381,369,640,480,why,0,1,XX,a,b,c,d,e\n")
    with pytest.raises(ValueError, match="unknown question type"):
        nextqa.read(nextqa_dir / "test.csv")


def test_nextqa_summary_reports_each_group_and_the_whole_as_eval_mc_does(tmp_path):
    nextqa_dir = tmp_path / "nextqa"
    nextqa_dir.mkdir()
    rows = ["1,9,6,4,why a,0,0,CW,x,y,z,u,v", "1,9,6,4,how b,1,1,CH,x,y,z,u,v", "1,9,6,4,what next,2,2,TN,x,y,z,u,v",
            "1,9,6,4,what before,3,3,TP,x,y,z,u,v", "1,9,6,4,how many,4,4,DC,x,y,z,u,v"]
    (nextqa_dir / "val.csv").write_text(NEXTQA_HEADER + "\n".join(rows) + "\n")
    questions = nextqa.read(nextqa_dir)
    replies = ["(A)", "(A)", "(C) z", "The answer is D", "E"]  # right, wrong, right, wrong (official), right
    records = [_scored(q, reply) for q, reply in zip(questions, replies, strict=True)]
    official = summarize(records)["metrics"]["official"]["m"]
    assert {c: (cell["value"], cell["n"]) for c, cell in official.items()} == {
        "nextqa/causal": (0.5, 2), "nextqa/temporal": (0.5, 2), "nextqa/descriptive": (1.0, 1), "nextqa/all": (0.6, 5)}
    assert summarize(records)["metrics"]["corrected"]["m"]["nextqa/temporal"]["value"] == 1.0


def _egoschema(tmp_path):
    uids = ["001934bb-81bd-4cd8-a574-0472ef3f6678", "0074f737-11cb-497d-8d07-77c3a8127391",
            "00b9a0de-c59e-49cb-a127-6081e2fb8c8e"]
    _clip(tmp_path / "videos" / f"{uids[0]}.mp4")
    _clip(tmp_path / "videos" / f"{uids[1]}.mp4")
    _write(tmp_path / "questions.json", [
        {"q_uid": uid, "google_drive_id": f"drive{i}", "question": f"What is c mainly doing in video {i}?",
         **{f"option {k}": f"c does thing {k}{i}" for k in range(5)}} for i, uid in enumerate(uids)])
    _write(tmp_path / "subset_answers.json", {uids[1]: 3, uids[2]: 0})  # the first question's key is private
    return uids


def test_egoschema_reader_keys_the_public_subset_and_leaves_the_rest_unscored(tmp_path):
    uids = _egoschema(tmp_path)
    questions = SUITES["egoschema"](tmp_path)
    assert [(q.qid, q.answer_index, Path(q.media).is_file()) for q in questions] == [
        (uids[0], None, True), (uids[1], 3, True), (uids[2], 0, False)]
    private, public = questions[0], questions[1]
    assert public.reference == "c does thing 31" and private.reference == ""
    assert private.prompt.endswith("(E) c does thing 40\nOnly give the best option.")
    assert score(private, "(B) c does thing 10") == ({"unscored": True}, {"corrected": "B"})
    assert score(public, "(D)")[0]["official"] is True
    records = [_scored(private, "(B)"), _scored(public, "D. c does thing 31")]
    summary = summarize(records)
    assert summary["metrics"]["official"]["m"]["egoschema"]["n"] == 1  # only the public key counts
    assert summary["counts"]["m"]["egoschema"] == {"answered": 2, "unscored": 1}
    assert "| m | 2 / 0 (1 unscored) |" in markdown(summary)
    _write(tmp_path / "subset_answers.json", {uids[1]: 7})
    with pytest.raises(ValueError, match="not an option index"):
        egoschema.read(tmp_path)
    (tmp_path / "subset_answers.json").unlink()
    assert all(q.answer_index is None for q in egoschema.read(tmp_path))  # no key file: all unscored


# -- scorers ------------------------------------------------------------------------------------

OPTIONS = ("Ate the medicine.", "Tidied up the blanket.", "Put down the cup.", "Took the box.")


@pytest.mark.parametrize("answer, official, corrected", [
    ("(B)", True, 1), ("B.", True, 1), ("(B) Tidied up the blanket.", True, 1), ("b", True, 1),
    ("The answer is B", False, 1), ("Tidied up the blanket.", False, 1), ("", True, None),
    ("(C) Put down the cup.", False, 2), ("I do not know.", False, None),
])
def test_mvbench_official_rule_and_corrected_reading(answer, official, corrected):
    assert mvbench_official(answer, answer_index=1) is official
    assert extract_choice(answer, OPTIONS) == corrected


def test_videomme_best_option_quirk_under_the_official_rule_and_fixed_under_the_corrected():
    assert videomme_official("Best option: C") == "B"  # the B of "Best": the prefix is never stripped
    assert extract_choice("Best option: C", OPTIONS) == 2
    assert videomme_official("The best answer is D") == "D"
    assert videomme_official("C. Put down the cup.") == "C"
    assert videomme_official("there is no way to tell what the person does in this clip at all") == ""
    q = Question("video-mme", "short", "1", "v.mp4", "q?", "p", OPTIONS[2], OPTIONS, 2, "videomme")
    verdicts, extracted = score(q, "Best option: C")
    assert verdicts == {"official": False, "corrected": True, "no_option": False, "rules_differ": True}
    assert extracted == {"corrected": "C", "official": "B"}
    verdicts, _ = score(q, "nothing to say")
    assert verdicts["official"] is None and verdicts["no_option"] and not verdicts["rules_differ"]


def test_corrected_reading_needs_a_marked_letter_and_prefers_the_longer_option():
    options = ("red", "dark red", "a cat")
    assert extract_choice("A cat is sitting.", ("dog", "cat")) == 1  # by its text: the article A is not option A
    assert extract_choice("A bird flies.", ("dog", "cat")) is None
    assert extract_choice("It is dark red.", options) == 1
    assert extract_choice("option (C)", options) == 2
    assert extract_choice("E", options) is None  # no fifth option


def test_string_match_is_whole_words_after_normalising():
    assert string_match("The man is cooking pasta.", "cooking")
    assert string_match("A dog.", "the dog")
    assert not string_match("The man is cooking.", "cook")
    assert not string_match("anything", "")


# -- judge --------------------------------------------------------------------------------------

class _StubJudge(BaseHTTPRequestHandler):
    """Stands in for the remote judge only: yes/4 when the predicted answer contains the correct
    one, else no/1; the first reply of a session is unreadable when ``garble`` is set."""

    requests: list = []
    garble = False

    def do_POST(self):  # noqa: N802 - http.server's name
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append((self.path, body))
        user = body["messages"][1]["content"]
        correct = user.split("Correct Answer: ")[1].split("\n")[0]
        predicted = user.split("Predicted Answer: ")[1].split("\n")[0]
        content = "{'pred': 'yes', 'score': 4}" if correct in predicted else "Sure! {'pred': 'no', 'score': 1}"
        if type(self).garble:
            type(self).garble, content = False, "I think it is fine."
        reply = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                              "finish_reason": "stop"}],
                 "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}
        data = json.dumps(reply).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    _StubJudge.requests = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubJudge)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_judge_sends_the_protocol_and_reads_yes_no_and_score(judge_url):
    judge = Judge(judge_url, "stub-judge", api_key="unused")
    verdict = judge("what is the man doing?", "cooking", "He is cooking pasta.")
    assert (verdict.yes, verdict.score, verdict.error) == (True, 4, "")
    path, body = _StubJudge.requests[0]
    assert path == "/v1/chat/completions" and body["model"] == "stub-judge"
    assert body["messages"][0]["role"] == "system"
    assert "Question: what is the man doing?" in body["messages"][1]["content"]
    assert "{'pred': 'yes', 'score': 4.8}" in body["messages"][1]["content"]
    no = judge("what is the man doing?", "cooking", "He is sleeping.")
    assert (no.yes, no.score) == (False, 1)  # read from the dict inside the chatter
    _StubJudge.garble = True
    again = judge("q", "cooking", "cooking")
    assert (again.yes, len(_StubJudge.requests)) == (True, 4)  # the unreadable reply was asked again


def test_parse_reply_reports_unreadable_replies():
    assert parse_reply("{'pred': 'no', 'score': 2}").yes is False
    bad = parse_reply("yes, 5")
    assert bad.yes is None and bad.error


# -- ranking ------------------------------------------------------------------------------------

def _votes(pairs):
    return [{"left": a, "right": b, "vote": v} for a, b, v, n in pairs for _ in range(n)]


def test_bradley_terry_matches_the_hand_computed_strengths():
    # Built so that strengths 4 : 2 : 1 satisfy the likelihood equations exactly:
    # wins of A = 2 + 4 = 3*(4/6) + 5*(4/5); of B = 1 + 2 = 3*(2/6) + 3*(2/3); of C = 1 + 1 = 3/3 + 5/5.
    votes = _votes([("A", "B", "left", 2), ("A", "B", "right", 1), ("B", "C", "left", 2), ("C", "B", "left", 1),
                    ("A", "C", "left", 4), ("A", "C", "right", 1)])
    from evaluation.ranking import games

    strength = bradley_terry(games(votes), prior=0)
    assert strength == pytest.approx({"A": 2.0, "B": 1.0, "C": 0.5}, rel=1e-6)  # 4:2:1, geometric mean 1
    assert to_elo(strength["A"]) == pytest.approx(1000 + 400 * 0.30103, abs=0.01)
    ranks = rank(votes, rounds=50, prior=0)
    assert [r.model for r in ranks] == ["A", "B", "C"]
    assert [(r.votes, r.wins, r.losses, r.ties) for r in ranks] == [(8, 6, 2, 0), (6, 3, 3, 0), (8, 2, 6, 0)]
    assert all(r.low <= r.rating <= r.high for r in ranks)


def test_ties_count_half_and_the_prior_keeps_an_unbeaten_model_finite():
    votes = _votes([("A", "B", "tie", 2)])
    assert bradley_terry([("A", "B", 0.5)] * 2, prior=0) == pytest.approx({"A": 1.0, "B": 1.0})
    ranks = rank(votes + _votes([("A", "B", "both_bad", 1)]), rounds=20)
    assert [r.ties for r in ranks] == [3, 3]
    unbeaten = rank(_votes([("A", "B", "left", 3)]), rounds=20)
    assert unbeaten[0].model == "A" and 1000 < unbeaten[0].rating < 1400
