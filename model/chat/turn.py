"""One turn of a conversation, run on an engine worker: media -> prompt -> streamed answer.

Split from ``engine.py`` (which owns queues, threads and the public API) so that each
stage of a turn reads top to bottom: media tokens (frozen features from the shared cache,
adapters per model), the prompt (with old turns dropped to fit the context), generation
(reusing the conversation's KV cache), and the trace the web app shows.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import torch

from model.chat.builder import build_prompt
from model.chat.cache import FeatureCache, KVState, Piece, pieces_after
from model.chat.conversation import Attachment, Conversation, dialogue, prompt_keys, prompt_pieces
from model.chat.errors import BadRequest
from model.chat.generate import GenerationSettings, TextStream, beam_tokens, stream_tokens
from model.chat.prefix import PrefixStore
from model.chat.prompts import get_template, stop_strings, stop_token_ids
from model.chat.trace import MediaInfo, TurnTrace


def run_turn(model: Any, request: Any, features: FeatureCache, prefixes: PrefixStore | None = None) -> None:
    """Answer the last (pending) turn of ``request.conv`` with ``model``, emitting deltas to
    ``request``; frozen encoder outputs come from (and go to) ``features``; a conversation
    without a KV cache of its own may take one from ``prefixes`` (shared prompt prefixes)."""
    conv: Conversation = request.conv
    start = time.perf_counter()
    trace = TurnTrace(model=conv.model, template=model.config.llm.template, settings=request.settings)
    trace.timings.queue_wait = start - request.submitted
    if conv.media is not None:
        if (conv.model, conv.media.id) not in conv.media_tokens:  # first turn about this file
            trace.timings.decode = conv.media.load_seconds
        trace.notes += conv.media.notes
        trace.media = MediaInfo(path=conv.media.path, kind=conv.media.kind, sound=conv.media.use_audio)
    media = media_tokens(features, conv, model, trace)
    pieces, max_new = plan_prompt(conv, model, media, request.settings, trace)
    settings = dataclasses.replace(request.settings, max_new_tokens=max_new)
    generate_answer(conv, model, pieces, settings, request, trace, prefixes)
    trace.timings.total = time.perf_counter() - start
    conv.last_trace = trace


# -- media -------------------------------------------------------------------------------
def media_tokens(features: FeatureCache, conv: Conversation, model: Any, trace: TurnTrace) -> dict[str, torch.Tensor]:
    """LLM soft tokens for the attached media, per branch: {"video": (1, Qv, D), "audio": (1, Qa, D)}."""
    att = conv.media
    if att is None:
        return {}
    _, slots = att.message_and_slots
    key = (conv.model, att.id)
    cached = conv.media_tokens.get(key)
    if cached is not None and set(slots) <= set(cached):
        trace.notes.append("media tokens reused from an earlier turn")
        _record_media_shapes(trace, cached)
        return cached
    out = {}
    with torch.no_grad():
        if "video" in slots:
            feats = frozen_features(features, model, att, "vision", trace)  # (1, T, Qi, H)
            t = time.perf_counter()
            out["video"] = model.video_tokens(feats)  # (1, Qv, D)
            trace.add_time("adapters", time.perf_counter() - t)
        if "audio" in slots:
            feats = frozen_features(features, model, att, "audio", trace)  # (1, S, E)
            t = time.perf_counter()
            out["audio"] = model.audio_tokens(feats)  # (1, Qa, D)
            trace.add_time("adapters", time.perf_counter() - t)
    conv.media_tokens[key] = out
    _record_media_shapes(trace, out)
    return out


def frozen_features(features: FeatureCache, model: Any, att: Attachment, branch: str, trace: TurnTrace) -> torch.Tensor:
    """Frozen encoder output for the attachment, from ``features`` when possible.

    The key is (hash of the decoded input, load options, encoder fingerprint): checkpoints that share
    frozen encoder weights (same fingerprint) share entries; the adapters run per model.
    """
    media = att.media
    fingerprint = (getattr(model, "fingerprints", None) or {}).get(branch) or f"unshared-model-{id(model)}"
    content = getattr(media, "sha256", None) or f"object-{id(media)}"
    key = (content, att.options_key, branch, fingerprint)
    feats = features.get(key)
    name = "vision_encode" if branch == "vision" else "audio_encode"
    if feats is not None:
        setattr(trace.timings, name, 0.0)
        trace.notes.append(f"{branch} features from the media cache (encoder skipped)")
        return feats
    t = time.perf_counter()
    if branch == "vision":
        frames = media.frames
        frames = frames[None] if frames.ndim == 4 else frames  # (1, T, 3, H, W)
        trace.shapes.frames = list(frames.shape)
        feats = model.encode_frames(frames)  # (1, T, Qi, H)
    else:
        fbank = media.audio
        fbank = fbank[None] if fbank.ndim == 4 else fbank  # (1, S, 1, M, F)
        trace.shapes.fbank = list(fbank.shape)
        feats = model.encode_clips(fbank)  # (1, S, E)
    features.count_encoder_call(branch)
    features.put(key, feats)
    setattr(trace.timings, name, time.perf_counter() - t)
    setattr(trace.shapes, "frame_features" if branch == "vision" else "clip_embeddings", list(feats.shape))
    return feats


def _record_media_shapes(trace: TurnTrace, media: dict[str, torch.Tensor]) -> None:
    for branch, tokens in media.items():
        setattr(trace.shapes, f"{branch}_tokens", list(tokens.shape))  # video_tokens, audio_tokens


# -- prompt ------------------------------------------------------------------------------
def media_key(att: Attachment) -> tuple:
    """What the media positions of a prompt are keyed by: the decoded content and how it was
    loaded, so that a request resending the same file can reuse a cached prompt prefix."""
    return (getattr(att.media, "sha256", "") or f"attachment-{att.id}", att.options_key, att.kind, att.use_audio)


def plan_prompt(conv: Conversation, model: Any, media: dict[str, torch.Tensor], settings: GenerationSettings,
                trace: TurnTrace) -> tuple[list[Piece], int]:
    """Render and tokenize the prompt, dropping the oldest turns (never the media) until
    prompt + ``max_new_tokens`` fits ``config.llm.max_context``; returns (pieces, max_new)."""
    template = get_template(model.config.llm.template)
    budget = min(model.config.llm.max_context, model.config.llm.max_positions)
    attachment_id = media_key(conv.media) if conv.media else 0
    start = conv.first_turn
    while True:
        prompt = build_prompt(template, dialogue(conv, start), model.tokenizer)
        pieces = prompt_pieces(prompt.parts(model.tokenizer), media, attachment_id)
        length = sum(len(p) for p in pieces)
        if length + settings.max_new_tokens <= budget or start >= len(conv.turns) - 1:
            break
        start += 1
    if start > conv.first_turn:
        trace.notes.append(f"dropped {start - conv.first_turn} oldest turn(s) to fit the "
                              f"{budget}-token context (the media is kept)")
        conv.first_turn = start
    if conv.first_turn:
        trace.notes.append(f"the model sees the last {len(conv.turns) - conv.first_turn} of "
                              f"{len(conv.turns)} turns")
    max_new = settings.max_new_tokens
    if length + max_new > budget:
        if length >= budget:
            raise BadRequest(f"the prompt is {length} tokens, over the model's {budget}-token context; "
                             "ask a shorter question")
        max_new = budget - length
        trace.notes.append(f"answer limited to {max_new} tokens to fit the context")
    trace.prompt = prompt.text
    trace.tokens.prompt = length
    trace.tokens.media = sum(len(p) for p in pieces if p.ids is None)
    trace.tokens.turns_in_prompt = len(conv.turns) - conv.first_turn
    trace.tokens.limit = max_new
    return pieces, max_new


# -- generation --------------------------------------------------------------------------
def generate_answer(conv: Conversation, model: Any, pieces: list[Piece], settings: GenerationSettings,
                    request: Any, trace: TurnTrace, prefixes: PrefixStore | None = None) -> None:
    """Stream the answer to ``request`` and store it in the conversation's last turn."""
    template = get_template(model.config.llm.template)
    tokenizer = model.tokenizer
    keys = prompt_keys(pieces)
    beams = settings.num_beams > 1
    media = conv.media is not None  # the LLM's LoRA adapter (if any) runs on prompts with media only
    adapter = model.llm_adapter if media else None
    kv = conv.kv
    if kv is None and not beams and prefixes is not None:
        kv = prefixes.take(conv.model, keys)  # e.g. a client resending the conversation so far
    kv = KVState() if beams or kv is None or kv.adapter != adapter else kv
    kv.adapter = adapter  # a cache is never continued under another adapter setting
    reused = 0 if beams else kv.reuse(keys)
    t = time.perf_counter()
    with torch.no_grad():
        embeds = model.embed_interleaved([p.tensor() for p in pieces_after(pieces, reused)])  # (1, L, D)
    trace.timings.embed = time.perf_counter() - t
    trace.shapes.prompt_embeds = list(embeds.shape)
    trace.tokens.reused, trace.tokens.prefilled = reused, embeds.shape[1]
    stop_ids = stop_token_ids(tokenizer, getattr(model.llm, "generation_config", None))
    stream = TextStream(tokenizer, stop_strings(template, tokenizer) + list(settings.stop))
    generated: list[int] = []
    t = time.perf_counter()
    with model.llm_scope(media):
        if beams:
            tokens = iter(beam_tokens(model.llm, embeds, settings, stop_ids, request.cancel))
        else:
            tokens = stream_tokens(model.llm, embeds, kv.cache, settings, stop_ids, request.cancel)
        try:
            for token in tokens:
                if not generated:
                    trace.timings.prefill = time.perf_counter() - t  # includes the first sample
                    trace.timings.first_token = time.perf_counter() - request.submitted
                if token in stop_ids:
                    break
                generated.append(token)
                request.emit(stream.push(token))
                if stream.stopped or request.cancel.is_set():
                    break
        finally:
            getattr(tokens, "close", lambda: None)()
    elapsed = time.perf_counter() - t
    if not stream.stopped:
        request.emit(stream.finish())
    if request.cancel.is_set():
        trace.notes.append("stopped before the end")
    conv.turns[-1].answer = stream.text.strip()
    trace.tokens.new = len(generated)
    trace.timings.generate = elapsed
    trace.tokens_per_second = len(generated) / elapsed if elapsed > 0 else 0.0
    if beams:
        conv.kv = None
    else:
        fed = kv.cache.get_seq_length() - len(keys)  # generated ids fed back into the cache
        kv.keys = keys + generated[:max(0, fed)]
        conv.kv = kv
