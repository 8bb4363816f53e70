"""The decode loop against transformers' generate, seeds, cancellation, stop-text hold-back."""

from __future__ import annotations

import threading

import pytest
import torch
from transformers import DynamicCache

from model.chat.generate import GenerationSettings, TextStream, beam_tokens, stream_tokens
from tests.tiny import tiny_llm, tiny_tokenizer

EOS = 2


@pytest.fixture(scope="module")
def llm():
    return tiny_llm(seed=3)


def _prompt(llm, n=7, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 99, (1, n), generator=g)
    return llm.get_input_embeddings()(ids).detach()  # (1, n, D)


def test_greedy_matches_transformers_generate(llm):
    emb = _prompt(llm)
    settings = GenerationSettings(max_new_tokens=12, do_sample=False)
    ours = list(stream_tokens(llm, emb, DynamicCache(), settings, {EOS}))
    ref = llm.generate(inputs_embeds=emb, attention_mask=torch.ones(1, emb.shape[1], dtype=torch.long),
                       do_sample=False, max_new_tokens=12, eos_token_id=EOS, pad_token_id=0)
    assert ours == ref[0].tolist()


def test_cache_holds_prompt_and_fed_tokens(llm):
    emb, cache = _prompt(llm, n=5), DynamicCache()
    ids = list(stream_tokens(llm, emb, cache, GenerationSettings(max_new_tokens=6, do_sample=False), set()))
    assert len(ids) == 6
    assert cache.get_seq_length() == 5 + 6 - 1  # the last id is never fed back


def test_seed_reproduces_and_differs(llm):
    emb = _prompt(llm)
    run = lambda seed: list(stream_tokens(llm, emb, DynamicCache(),  # noqa: E731
                                          GenerationSettings(max_new_tokens=20, seed=seed, top_p=1.0), set()))
    assert run(1) == run(1)
    assert run(1) != run(2)


def test_top_k_one_is_greedy_and_repetition_penalty_changes_output(llm):
    emb = _prompt(llm)
    greedy = list(stream_tokens(llm, emb, DynamicCache(), GenerationSettings(max_new_tokens=15, do_sample=False),
                                set()))
    top1 = list(stream_tokens(llm, emb, DynamicCache(),
                              GenerationSettings(max_new_tokens=15, top_k=1, seed=5), set()))
    assert top1 == greedy
    penalised = list(stream_tokens(llm, emb, DynamicCache(),
                                   GenerationSettings(max_new_tokens=15, do_sample=False,
                                                      repetition_penalty=50.0), set()))
    assert len(set(penalised)) == len(penalised)  # a huge penalty forbids any repeat
    assert len(set(greedy)) < len(greedy)  # whereas this tiny model does repeat


def test_cancel_stops_the_loop(llm):
    emb, cancel = _prompt(llm), threading.Event()
    got = []
    for token in stream_tokens(llm, emb, DynamicCache(), GenerationSettings(max_new_tokens=50, do_sample=False),
                               set(), cancel):
        got.append(token)
        if len(got) == 3:
            cancel.set()
    assert len(got) == 3


def test_beam_search_runs_and_honours_cancel(llm):
    emb = _prompt(llm)
    settings = GenerationSettings(max_new_tokens=8, num_beams=3, do_sample=False)
    ids = beam_tokens(llm, emb, settings, set())
    assert len(ids) == 8
    cancelled = threading.Event()
    cancelled.set()
    assert len(beam_tokens(llm, emb, settings, set(), cancelled)) <= 1


def test_settings_are_checked():
    GenerationSettings().check()
    for bad in (dict(max_new_tokens=0), dict(top_p=0.0), dict(temperature=-1), dict(num_beams=0),
                dict(top_k=-1), dict(repetition_penalty=0)):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GenerationSettings(**bad).check()


def _push_all(stream, text, tok):
    return [stream.push(i) for i in tok(text, add_special_tokens=False)["input_ids"]]


def test_stop_string_is_held_back_then_cut():
    tok = tiny_tokenizer()
    stream = TextStream(tok, ["###", "</s>"])
    deltas = _push_all(stream, " Hi a#b ##c###Human", tok)
    assert "".join(deltas) == "Hi a#b ##c"
    assert stream.stopped and stream.text == "Hi a#b ##c"
    # the '#' after 'a' and the '##' after the space were held until the next character
    assert deltas[0] == "" and deltas[5] == "" and deltas[6] == "#b"  # leading space dropped
    assert not any("###" in d for d in deltas)


def test_partial_stop_released_at_finish():
    tok = tiny_tokenizer()
    stream = TextStream(tok, ["###"])
    deltas = _push_all(stream, "ok ##", tok)
    assert "".join(deltas) == "ok " and not stream.stopped
    assert stream.finish() == "##"


class _ByteTok:
    """Decodes ids as UTF-8 bytes, like a byte-fallback tokenizer mid-character."""

    def decode(self, ids, skip_special_tokens=True):
        return bytes(ids).decode("utf-8", errors="replace")


def test_unfinished_utf8_character_is_held_back():
    stream = TextStream(_ByteTok(), [])
    deltas = [stream.push(b) for b in "aé".encode()]
    assert deltas == ["a", "", "é"]


@pytest.mark.parametrize("poison", [float("nan"), float("inf")])
def test_non_finite_scores_are_refused_clearly(llm, poison):
    import copy

    from model.chat.errors import ChatError, NonFiniteOutput

    bad = copy.deepcopy(llm)
    with torch.no_grad():
        bad.lm_head.weight[5] = poison  # token 5's score is NaN or +-inf
    emb = _prompt(bad)
    for settings in (GenerationSettings(max_new_tokens=3, do_sample=False),
                     GenerationSettings(max_new_tokens=3, top_k=4, seed=0)):
        with pytest.raises(NonFiniteOutput, match="not numbers .NaN or infinity"):
            list(stream_tokens(bad, emb, DynamicCache(), settings, {EOS}))
    with pytest.raises(ChatError, match="not numbers"):
        beam_tokens(bad, emb, GenerationSettings(max_new_tokens=3, num_beams=2, do_sample=False), {EOS})
    # the same settings on the healthy model sample fine (top-k's own -inf is allowed)
    assert len(list(stream_tokens(llm, emb, DynamicCache(), GenerationSettings(max_new_tokens=3, top_k=4, seed=0),
                                  set()))) == 3
