"""Whole conversations given at once (model/chat/stateless.py) and the shared prefix store
(model/chat/prefix.py), without HTTP."""

from __future__ import annotations

import pytest

from model.chat.cache import KVState
from model.chat.errors import BadRequest
from model.chat.prefix import PrefixStore
from model.chat.stateless import Message, split_messages


def test_split_messages_gives_system_turns_and_the_last_question():
    system, turns, question = split_messages([
        Message("system", "Be brief."), Message("user", "Hi"), Message("user", "What is it?"),
        Message("assistant", "A cat."), Message("system", "Use French."), Message("user", "Colour?")])
    assert system == "Be brief.\n\nUse French."
    assert [(t.question, t.answer) for t in turns] == [("Hi\n\nWhat is it?", "A cat.")]
    assert question == "Colour?"


@pytest.mark.parametrize("messages, problem", [
    ([], "empty"),
    ([Message("assistant", "Hello")], "first non-system message"),
    ([Message("user", "Hi"), Message("assistant", "Hello")], "last message must be a user question"),
    ([Message("robot", "Hi")], "role 'robot'"),
    ([Message("user", "look <ImageHere>")], "<ImageHere>"),
])
def test_split_messages_refuses_what_cannot_be_a_conversation(messages, problem):
    with pytest.raises(BadRequest, match=problem):
        split_messages(messages)


def _kv(keys: list) -> KVState:
    return KVState(keys=list(keys))


def test_prefix_store_hands_out_the_longest_match_once_and_per_model():
    store = PrefixStore(4)
    short, long = _kv([1, 2, 3]), _kv([1, 2, 3, 4, 5])
    store.put("a", short)
    store.put("a", long)
    store.put("b", _kv([1, 2, 3, 4, 5, 6]))
    assert store.take("a", [1, 2, 3, 4, 5, 9]) is long  # the longest shared prefix, of model "a"
    assert store.take("a", [1, 2, 3, 4, 5, 9]) is short  # taken entries are gone: never shared
    assert store.take("a", [1, 2, 3]) is None
    assert store.take("b", [7, 8]) is None  # nothing shares even two keys
    assert (store.hits, store.misses) == (2, 2)


def test_prefix_store_keeps_the_most_recent_entries():
    store = PrefixStore(2)
    for first in (1, 2, 3):
        store.put("a", _kv([first, 0, 0]))
    assert len(store) == 2
    assert store.take("a", [1, 0, 0, 5]) is None  # the oldest was evicted
    assert store.take("a", [3, 0, 0, 5]) is not None
