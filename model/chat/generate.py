"""Token generation: a streaming decode loop over a KV cache, and stop-text handling.

The loop is our own rather than ``generate()`` so that the engine can keep a
conversation's KV cache between turns (a follow-up turn prefills only its new tokens) and
check a cancel flag between tokens. Sampling reuses transformers' logits processors, so
temperature, top-p, top-k and repetition penalty mean exactly what they mean there. Beam
search is rare in chat and is delegated to ``generate()`` (no streaming, no cache reuse).
"""

from __future__ import annotations

import dataclasses
import json
import math
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache, StoppingCriteria, StoppingCriteriaList
from transformers.generation.logits_process import (
    LogitsProcessor,
    LogitsProcessorList,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from model.chat.errors import NonFiniteOutput


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _shown(value: Any) -> str:
    return repr(value) if not isinstance(value, int) or abs(value) < 1 << 64 else f"{value:.3g}"


# setting -> (type test, type in words, range test, range in words). Upper bounds keep a value
# from reaching torch as an overflow (a seed above 2**63) or from exhausting memory.
SETTING_RULES: dict[str, tuple[Callable[[Any], bool], str, Callable[[Any], bool], str]] = {
    "max_new_tokens": (_whole, "a whole number", lambda v: 1 <= v <= 100_000, "between 1 and 100000"),
    "temperature": (_number, "a number", lambda v: 0 <= v <= 100, "between 0 and 100 (0 means greedy)"),
    "top_p": (_number, "a number", lambda v: 0 < v <= 1, "in (0, 1]"),
    "top_k": (_whole, "a whole number", lambda v: 0 <= v <= 1_000_000, "0 (off) or more"),
    "num_beams": (_whole, "a whole number", lambda v: 1 <= v <= 16, "between 1 and 16"),
    "repetition_penalty": (_number, "a number", lambda v: 0 < v <= 100, "above 0 and at most 100 (1.0 is off)"),
    "seed": (lambda v: v is None or _whole(v), "a whole number or null",
             lambda v: v is None or 0 <= v < 1 << 63, "between 0 and 2**63 - 1"),
    "do_sample": (lambda v: isinstance(v, bool), "true or false", lambda v: True, ""),
    "stop": (lambda v: isinstance(v, (tuple, list)) and all(isinstance(s, str) for s in v), "a list of strings",
             lambda v: len(v) <= 4 and all(v), "at most 4 non-empty strings"),
}


@dataclass
class GenerationSettings:
    """Sampling settings; defaults are the original `Chat.answer`'s."""

    max_new_tokens: int = 300
    temperature: float = 1.0
    top_p: float = 0.9
    top_k: int = 0  # 0: off (the original does not set it)
    num_beams: int = 1
    repetition_penalty: float = 1.0
    seed: int | None = None  # None: a fresh random draw each time
    do_sample: bool = True  # the original hard-codes sampling
    stop: tuple[str, ...] = ()  # extra text that ends the answer (not shown), e.g. an API's "stop"

    def check(self) -> None:
        """Raise ValueError naming the first setting of the wrong type or out of range.

        Types are checked, not coerced: settings arrive as JSON from the app's API, and
        ``"no"`` must not read as true nor ``2.5`` beams as 2.
        """
        for f in dataclasses.fields(self):
            is_type, kind, in_range, what = SETTING_RULES[f.name]  # a new field needs its rule
            value = getattr(self, f.name)
            if not is_type(value):
                raise ValueError(f"generation setting {f.name} must be {kind}, got {_shown(value)}")
            if not in_range(value):
                raise ValueError(f"generation setting {f.name}={_shown(value)} must be {what}")

    @property
    def greedy(self) -> bool:
        return not self.do_sample or self.temperature == 0


def build_processors(settings: GenerationSettings) -> LogitsProcessorList:
    """Logits processors in the order transformers' ``generate`` applies them."""
    procs = LogitsProcessorList([_FiniteScores()])
    if settings.repetition_penalty != 1.0:
        procs.append(RepetitionPenaltyLogitsProcessor(settings.repetition_penalty))
    if not settings.greedy:
        if settings.temperature != 1.0:
            procs.append(TemperatureLogitsWarper(settings.temperature))
        if settings.top_k > 0:
            procs.append(TopKLogitsWarper(settings.top_k))
        if settings.top_p < 1.0:
            procs.append(TopPLogitsWarper(settings.top_p))
    return procs


NON_FINITE_MESSAGE = ("the language model produced scores that are not numbers (NaN or infinity), so no "
                      "word can be chosen; its weights or this input are damaged: check the model folder "
                      "(launch.py inspect) or try other media")


class _FiniteScores(LogitsProcessor):
    """First of the processors: the model's raw scores must be finite (top-k/top-p add -inf later).

    Without it, sampling fails deep in torch ("probability tensor contains either inf, nan").
    """

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if not torch.isfinite(scores).all():
            raise NonFiniteOutput(NON_FINITE_MESSAGE)
        return scores


def make_generator(seed: int | None, device: torch.device | str) -> torch.Generator:
    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()
    else:
        gen.manual_seed(seed)
    return gen


@torch.no_grad()
def stream_tokens(
    llm: Any,
    new_embeds: torch.Tensor,
    cache: DynamicCache,
    settings: GenerationSettings,
    stop_ids: set[int],
    cancel: threading.Event | None = None,
    generator: torch.Generator | None = None,
) -> Iterator[int]:
    """Prefill ``new_embeds`` (1, L, D) on top of ``cache``, then yield sampled token ids.

    The cache grows in place: after the loop it holds the prompt and every yielded id
    except the last one (which was never fed back). A stop id is yielded and ends the loop.
    The loop also ends when ``cancel`` is set (checked before every token) or when the
    caller closes the iterator.
    """
    procs = build_processors(settings)
    device = new_embeds.device
    if generator is None:
        generator = make_generator(settings.seed, device)
    logits = llm(inputs_embeds=new_embeds, past_key_values=cache, use_cache=True).logits[:, -1, :]
    produced = torch.empty((1, 0), dtype=torch.long, device=device)  # what repetition penalty sees
    for step in range(settings.max_new_tokens):
        if cancel is not None and cancel.is_set():
            return
        scores = procs(produced, logits.float())
        if settings.greedy:
            next_id = scores.argmax(dim=-1, keepdim=True)  # (1, 1)
        else:
            probs = torch.softmax(scores, dim=-1)
            next_id = torch.multinomial(probs, 1, generator=generator)  # (1, 1)
        token = int(next_id)
        yield token
        if token in stop_ids or step == settings.max_new_tokens - 1:
            return
        produced = torch.cat([produced, next_id], dim=1)
        logits = llm(input_ids=next_id, past_key_values=cache, use_cache=True).logits[:, -1, :]


class _NoNaNScores(LogitsProcessor):
    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if torch.isnan(scores).any() or torch.isposinf(scores).any():
            raise NonFiniteOutput(NON_FINITE_MESSAGE)
        return scores


class _CancelCriteria(StoppingCriteria):
    def __init__(self, cancel: threading.Event | None):
        self.cancel = cancel

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor, **kwargs) -> torch.BoolTensor:
        stop = self.cancel is not None and self.cancel.is_set()
        return torch.full((input_ids.shape[0],), stop, dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def beam_tokens(llm: Any, embeds: torch.Tensor, settings: GenerationSettings, stop_ids: set[int],
                cancel: threading.Event | None = None) -> list[int]:
    """Beam search (optionally sampled) through ``generate``; returns the new ids."""
    if settings.seed is not None:
        torch.manual_seed(settings.seed)  # generate() samples from the global generator
    # generate() log-softmaxes the scores before processors see them: NaN stays NaN, a row
    # of -inf turns NaN, and its own top-k/top-p add only -inf, so a NaN check is exact there.
    kwargs: dict[str, Any] = dict(do_sample=not settings.greedy, num_beams=settings.num_beams,
                                  logits_processor=LogitsProcessorList([_NoNaNScores()]),
                                  max_new_tokens=settings.max_new_tokens,
                                  repetition_penalty=settings.repetition_penalty, length_penalty=1.0)
    if not settings.greedy:
        kwargs.update(temperature=settings.temperature, top_p=settings.top_p, top_k=settings.top_k)
    mask = torch.ones(embeds.shape[:2], dtype=torch.long, device=embeds.device)
    out = llm.generate(inputs_embeds=embeds, attention_mask=mask, eos_token_id=sorted(stop_ids) or None,
                       pad_token_id=min(stop_ids) if stop_ids else 0,
                       stopping_criteria=StoppingCriteriaList([_CancelCriteria(cancel)]), **kwargs)
    return [int(t) for t in out[0]]  # with inputs_embeds only, generate returns just the new ids


class TextStream:
    """Turns a growing list of token ids into text deltas that never contain stop text.

    The whole id list is decoded each time and only the new text is emitted, because
    SentencePiece decodes a token differently depending on what precedes it. Text that
    could be the start of a stop string (``#`` when ``###`` stops) is held back until
    the next tokens show whether it is one; an unfinished UTF-8 character likewise.
    """

    def __init__(self, tokenizer: Any, stop_strings: list[str]):
        self.tokenizer = tokenizer
        self.stop_strings = [s for s in stop_strings if s]
        self.ids: list[int] = []
        self.text = ""  # decoded answer so far, cut at a stop string
        self.emitted = 0  # characters of self.text already handed out
        self.stopped = False  # a stop string was found

    def push(self, token_id: int) -> str:
        """Add one id; return the text that is now safe to show ('' if none)."""
        self.ids.append(token_id)
        text = self.tokenizer.decode(self.ids, skip_special_tokens=True).lstrip()
        cut = min((i for i in (text.find(s) for s in self.stop_strings) if i >= 0), default=-1)
        if cut >= 0:
            self.text, self.stopped = text[:cut], True
            return self._emit(len(self.text))
        self.text = text
        safe = len(text) - self._held_back(text)
        if text.endswith("\ufffd"):  # the rest of a multi-byte character is still to come
            safe = min(safe, len(text) - 1)
        return self._emit(safe)

    def finish(self) -> str:
        """Release what was held back (the answer ended without completing a stop string)."""
        if self.text.endswith("\ufffd"):
            self.text = self.text[:-1]
        return self._emit(len(self.text))

    def _emit(self, end: int) -> str:
        end = max(end, self.emitted)
        delta, self.emitted = self.text[self.emitted:end], end
        return delta

    def _held_back(self, text: str) -> int:
        """Length of the longest tail of ``text`` that begins some stop string."""
        best = 0
        for stop in self.stop_strings:
            for n in range(min(len(stop) - 1, len(text)), best, -1):
                if text.endswith(stop[:n]):
                    best = n
                    break
        return best


# -- a model folder's recommended settings -------------------------------------------------
GENERATION_FILE = "generation_config.json"  # as in Hugging Face model folders
# Hugging Face's generation_config.json keys that are ours too (same names, same meaning).
_SHARED_KEYS = ("max_new_tokens", "temperature", "top_p", "top_k", "num_beams", "repetition_penalty", "do_sample")


def save_generation_defaults(settings: GenerationSettings, folder: str | Path) -> Path:
    """Write ``settings`` as the folder's ``generation_config.json`` (Hugging Face's keys)."""
    path = Path(folder) / GENERATION_FILE
    path.write_text(json.dumps(generation_dict(settings), indent=2) + "\n")
    return path


def generation_dict(settings: GenerationSettings) -> dict:
    """``settings`` under Hugging Face's generation_config.json keys (the file, the API's model cards)."""
    settings.check()
    return {k: getattr(settings, k) for k in _SHARED_KEYS}


def load_generation_defaults(folder: str | Path) -> GenerationSettings:
    """The folder's recommended settings; a folder without the file gets the original demo's.

    Keys Hugging Face writes that are not sampling settings (token ids, versions) are ignored;
    a value of the wrong type or out of range is an error naming the file and the setting.
    """
    path = Path(folder) / GENERATION_FILE
    if not path.is_file():
        return GenerationSettings()
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSON ({err}); fix or delete it (then the original demo's "
                         "settings apply)") from err
    return settings_from_dict(data, str(path))


def settings_from_dict(data: object, source: str) -> GenerationSettings:
    """Settings from Hugging Face's generation_config.json keys (other keys are ignored; a key
    missing or null keeps the original demo's value); errors name ``source`` and the setting."""
    if not isinstance(data, dict):
        raise ValueError(f"{source} must hold a JSON object of generation settings")
    defaults = GenerationSettings()
    values = {}
    for key in _SHARED_KEYS:
        if key in data and data[key] is not None:
            want = type(getattr(defaults, key))
            value = data[key]
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if not isinstance(value, want) or (want is int and isinstance(value, bool)):
                raise ValueError(f"{source}: {key} must be a {want.__name__}, not {value!r}")
            values[key] = value
    settings = GenerationSettings(**values)
    try:
        settings.check()
    except ValueError as err:
        raise ValueError(f"{source}: {err}") from None
    return settings
