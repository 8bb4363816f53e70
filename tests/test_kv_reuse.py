"""KV-cache reuse must crop what the new prompt does not share: the logits after reuse equal a
fresh run over the whole prompt (a tiny random model's greedy tokens cannot show this; logits can)."""

from __future__ import annotations

import pytest
import torch

from model.chat.cache import KVState
from tests import tiny


@pytest.fixture(scope="module")
def llm():
    return tiny.tiny_llm(seed=3)


def _prefill(llm, kv: KVState, ids: list[int]) -> torch.Tensor:
    """Run ``ids`` on top of ``kv``; the last position's logits."""
    out = llm(input_ids=torch.tensor([ids]), past_key_values=kv.cache, use_cache=True)
    return out.logits[:, -1]


@pytest.mark.parametrize("old,new,shared", [
    ([1, 5, 6, 7, 8, 9, 10, 11], [1, 5, 6, 7, 20, 21, 22], 4),  # diverges: the old tail must go
    ([1, 5, 6, 7], [1, 5, 6, 7, 30, 31], 4),  # an extension: everything is kept
    ([1, 5, 6, 7, 8], [1, 5, 6, 7, 8], 4),  # the same prompt: the last position is run again
    ([1, 5, 6], [2, 5, 6, 7], 0),  # nothing shared: a fresh cache
])
@torch.no_grad()
def test_reused_cache_gives_the_logits_of_a_fresh_run(llm, old, new, shared):
    kv = KVState()
    _prefill(llm, kv, old)
    kv.keys = list(old)
    n = kv.reuse(list(new))
    assert n == shared and kv.cache.get_seq_length() == shared and kv.keys == new[:shared]
    reused = _prefill(llm, kv, new[n:])
    fresh = _prefill(llm, KVState(), new)
    torch.testing.assert_close(reused, fresh, rtol=1e-5, atol=1e-5)
    stale = KVState()  # the check can fail: a cache that keeps the old tail gives other logits
    _prefill(llm, stale, old)
    if stale.cache.get_seq_length() > shared and shared:
        with pytest.raises(AssertionError):
            torch.testing.assert_close(_prefill(llm, stale, new[shared:]), fresh, rtol=1e-5, atol=1e-5)
