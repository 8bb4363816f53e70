"""What each training stage computes: its loss and how a batch is assembled.

* Stage 0 (toy models only) lives in ``train/stage0.py``.
* Stage 1 (caption pre-training): ``[BOS] + media tokens + caption + end``, loss on the
  caption tokens only.
* Stage 2 (instruction tuning): the chat prompt exactly as inference builds it, with media
  slots, loss on the assistant's answer tokens only.

Stages 1 and 2 train only the adapters (Q-Former, queries, position embedding,
projection) of one or both branches, on frozen-encoder features computed once beforehand.
Logits are computed only at supervised positions: the LLM's trunk gives hidden states, and
its ``lm_head`` (a 49k-way matrix for SmolLM2) runs on the few answer positions alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as F
from torch import nn

from model.chat.builder import Dialogue, build_prompt, plain_ids
from model.chat.prompts import get_template, media_message

IGNORE = -100  # label of positions that carry no loss

# Trainable parameter prefixes of each branch (ARCHITECTURE.md key names).
BRANCH_PREFIXES = {
    "video": ("frame_position_embedding.", "video_qformer.", "video_proj."),
    "audio": ("audio_position_embedding.", "audio_qformer.", "audio_proj."),
}
ENCODER_PREFIXES = {
    "video": ("vision_encoder.", "ln_vision.", "image_qformer."),
    "audio": ("audio_encoder.",),
}


def branch_parameters(model: nn.Module, branches: tuple[str, ...],
                      prefixes: dict[str, tuple[str, ...]] = BRANCH_PREFIXES) -> list[tuple[str, nn.Parameter]]:
    """Freeze every parameter of ``model``, then unfreeze and return those of ``branches``."""
    unknown = set(branches) - set(prefixes)
    if unknown:
        raise ValueError(f"unknown branches {sorted(unknown)}; expected some of {sorted(prefixes)}")
    wanted = tuple(p for b in branches for p in prefixes[b])
    named = []
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(wanted))
        if p.requires_grad:
            named.append((name, p))
    return named


# -- stages 1 and 2: sequences with media slots --------------------------------------------
@dataclass
class Example:
    """One training sequence. ``pieces`` are token-id lists or a media slot name
    ("video" / "audio" / "image"); ``supervised`` says, per piece, whether its tokens carry loss."""

    pieces: list[list[int] | str]
    supervised: list[bool]
    clip: int  # row of the precomputed features
    meta: dict = field(default_factory=dict)
    frame: int = 0  # which of the clip's frames an "image" slot shows


def assemble(embed: nn.Module, examples: list[Example], media: dict[str, torch.Tensor]):
    """Embed a batch of examples with their media tokens; right-pad.

    Args:
        embed: the LLM's input embedding.
        examples: the batch.
        media: slot name -> (B, Q, D) soft tokens, row i for example i.
    Returns:
        embeds (B, L, D), attention mask (B, L), labels (B, L) with ``IGNORE`` off-target.
    """
    rows, labels = [], []
    dev = embed.weight.device
    for i, ex in enumerate(examples):
        parts, labs = [], []
        for piece, sup in zip(ex.pieces, ex.supervised, strict=True):
            if isinstance(piece, str):
                if piece not in media:
                    raise ValueError(f"example needs {piece!r} tokens but the batch has none")
                tokens = media[piece][i]  # (Q, D)
                parts.append(tokens)
                labs.append(torch.full((tokens.shape[0],), IGNORE, dtype=torch.long))
            else:
                ids = torch.tensor(piece, dtype=torch.long)
                parts.append(embed(ids.to(dev)))
                labs.append(ids if sup else torch.full_like(ids, IGNORE))
        rows.append(torch.cat(parts))
        labels.append(torch.cat(labs))
    L = max(r.shape[0] for r in rows)
    D = rows[0].shape[1]
    # media values: (B, Q, D) tensors, or per-example lists of (Q_i, D) rows of different lengths
    dtype = next(iter(media.values()))[0].dtype if media else rows[0].dtype
    out = torch.zeros(len(rows), L, D, dtype=dtype, device=dev)
    mask = torch.zeros(len(rows), L, dtype=torch.long, device=dev)
    lab = torch.full((len(rows), L), IGNORE, dtype=torch.long, device=dev)
    for i, (r, y) in enumerate(zip(rows, labels, strict=True)):
        out[i, : r.shape[0]] = r.to(dtype)
        mask[i, : r.shape[0]] = 1
        lab[i, : y.shape[0]] = y.to(dev)
    return out, mask, lab


class PrefixCache:
    """Keys/values of token prefixes shared by many examples (e.g. the chat template's system
    prompt and the media message up to the first slot). The LLM is frozen and a prefix holds
    no media, so its keys/values never change: compute them once, reuse them every step."""

    def __init__(self) -> None:
        self._store: dict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = {}

    def get(self, llm, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        if any(p.requires_grad for p in llm.parameters()):
            # A LoRA adapter of the LLM trains (train/llm_lora.py): the prefix's keys/values change
            # every step, so compute them afresh, once per batch, with their gradients.
            return _prefix_kv(llm, ids)
        key = tuple(ids)
        if key not in self._store:
            with torch.no_grad():
                self._store[key] = _prefix_kv(llm, ids)
        return self._store[key]


def _prefix_kv(llm, ids: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
    dev = llm.get_input_embeddings().weight.device
    cache = llm.model(input_ids=torch.tensor([ids], device=dev), use_cache=True).past_key_values
    return [(layer.keys, layer.values) for layer in cache.layers]


def shared_prefix(examples: list[Example]) -> list[int] | None:
    """The first piece when every example starts with the same unsupervised token piece."""
    first = examples[0].pieces[0]
    if isinstance(first, str) or examples[0].supervised[0]:
        return None
    same = all(ex.pieces[0] == first and not ex.supervised[0] for ex in examples)
    return first if same else None


LLM_PRECISIONS = ("auto", "fp32", "bf16")


def backprop_llm_precision(device: torch.device, requested: str = "auto") -> str:
    """Precision of the frozen LLM that stages 1 and 2 backpropagate through.

    ``auto``: bf16 on a GPU (as the original trained) and on a CPU that multiplies bf16 in
    hardware, where a stage-2 step takes about half the fp32 time (``bench/train_bench.py``);
    fp32 elsewhere. Only the frozen LLM changes: the adapters keep fp32 weights.
    """
    from model.device import cpu_has_native_bf16

    if requested not in LLM_PRECISIONS:
        raise ValueError(f"unknown LLM precision {requested!r}; choose one of {', '.join(LLM_PRECISIONS)}")
    if requested != "auto":
        return requested
    if torch.device(device).type == "cuda" or cpu_has_native_bf16():
        return "bf16"
    return "fp32"


def prepare_backprop_llm(llm, device: torch.device) -> None:
    """On a CPU in bf16 use plain attention: PyTorch's fused CPU attention has a slow bf16 backward
    (a stage-2 step takes 5.05 s with it and 3.91 s without, ``bench/train_bench.py``), while at
    these lengths (a few hundred tokens) plain attention is cheap."""
    if torch.device(device).type == "cpu" and llm.dtype == torch.bfloat16:
        llm.set_attn_implementation("eager")


def supervised_lm_loss(llm, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor,
                       prefix_kv: list[tuple[torch.Tensor, torch.Tensor]] | None = None) -> torch.Tensor:
    """Mean next-token cross-entropy over labelled positions, with ``lm_head`` run only there.

    ``prefix_kv``: per-layer (keys, values) of a prefix shared by the whole batch (batch 1);
    ``embeds``/``mask``/``labels`` then cover only what follows it.
    """
    kwargs = {}
    if prefix_kv is not None:
        from transformers import DynamicCache

        B = embeds.shape[0]
        data = [(k.expand(B, -1, -1, -1), v.expand(B, -1, -1, -1)) for k, v in prefix_kv]
        kwargs = {"past_key_values": DynamicCache(ddp_cache_data=data, config=llm.config), "use_cache": True}
        ones = torch.ones(B, prefix_kv[0][0].shape[2], dtype=mask.dtype, device=mask.device)
        mask = torch.cat([ones, mask], dim=1)  # (B, P + L)
    hidden = llm.model(inputs_embeds=embeds.to(llm.dtype), attention_mask=mask, **kwargs).last_hidden_state
    target = labels[:, 1:]  # position t predicts token t+1
    keep = target != IGNORE
    if not bool(keep.any()):
        raise ValueError("batch has no supervised tokens; check the labels of the examples")
    logits = llm.lm_head(hidden[:, :-1][keep])  # (N, vocab)
    return F.cross_entropy(logits.float(), target[keep])


@torch.no_grad()
def exact_answers(llm, embeds: torch.Tensor, mask: torch.Tensor, labels: torch.Tensor) -> list[bool]:
    """Per example: does greedy next-token prediction, teacher-forced, get every labelled token right?
    (The answer the model would write, without generating it token by token.)"""
    hidden = llm.model(inputs_embeds=embeds.to(llm.dtype), attention_mask=mask).last_hidden_state
    predicted = llm.lm_head(hidden[:, :-1]).argmax(-1)  # (B, L-1): position t predicts token t+1
    target = labels[:, 1:]
    keep = target != IGNORE
    return [bool((predicted[i][keep[i]] == target[i][keep[i]]).all()) for i in range(len(target))]


def media_tokens(model, batch_feats: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Trainable adapters over precomputed frozen features: slot name -> (B, Q, D)."""
    out = {}
    if "video" in batch_feats:
        out["video"] = model.video_tokens(batch_feats["video"])  # (B, Qv, D)
    if "audio" in batch_feats:
        out["audio"] = model.audio_tokens(batch_feats["audio"])  # (B, Qa, D)
    if "image" in batch_feats:
        # A still image goes through the video path as a video of one frame, as the engine does.
        out["image"] = model.video_tokens(batch_feats["image"])  # (B, 1, Qi, H) -> (B, Qv, D)
    return out


def shared_share(tokens: torch.Tensor) -> torch.Tensor:
    """Share of soft tokens' squared length that is the same for every clip of the batch.

    ``tokens``: (B, Q, D). Per query position, the squared length of the batch mean over the
    mean squared length: 1 when every clip gets the same tokens, 0 when they cancel out.
    """
    mean = tokens.mean(0)  # (Q, D): what every clip's tokens share at each position
    return mean.pow(2).sum(-1).mean() / tokens.pow(2).sum(-1).mean().clamp_min(1e-12)


def lm_batch_loss(model, examples: list[Example], feats: dict[str, torch.Tensor],
                  prefix_cache: PrefixCache | None = None, centre_weight: float = 0.0) -> tuple[torch.Tensor, int]:
    """Loss of one stage-1/2 micro-batch; ``feats`` holds the rows of these examples.

    ``centre_weight``: adds that times ``shared_share`` of each media slot's tokens. The
    adapters otherwise learn mostly one constant vector (bundled model: 8% of the video tokens'
    length varies with the clip), and the LLM's RMSNorm scales the clip's part down with it.
    """
    media = media_tokens(model, feats)
    prefix = shared_prefix(examples) if prefix_cache is not None else None
    prefix_kv = None
    if prefix is not None:
        prefix_kv = prefix_cache.get(model.llm, prefix)
        examples = [replace(ex, pieces=ex.pieces[1:], supervised=ex.supervised[1:]) for ex in examples]
    embeds, mask, labels = assemble(model.llm.get_input_embeddings(), examples, media)
    loss = supervised_lm_loss(model.llm, embeds, mask, labels, prefix_kv)
    if centre_weight and len(examples) > 1:
        loss = loss + centre_weight * sum(shared_share(t.float()) for t in media.values())
    return loss, len(examples)


def caption_example(tokenizer, caption: str, slot: str, clip: int, frame: int = 0,
                    max_tokens: int | None = None) -> Example:
    """Stage 1: ``[BOS] media caption [EOS]``, loss on the caption (at most ``max_tokens`` of it)
    and EOS. A caption is training text: tokenized as plain text, a ``</s>`` in it is no end."""
    ids = plain_ids(tokenizer, caption)[:max_tokens] + [tokenizer.eos_token_id]
    return Example([[tokenizer.bos_token_id], slot, ids], [False, False, True], clip=clip, frame=frame)


def chat_example(tokenizer, template_name: str, question: str, answer: str,
                 kind: str = "video", with_audio: bool = True, frame_message: str = "") -> tuple[list, list[bool]]:
    """Pieces of one single-turn instruction example (see ``conversation_example``)."""
    return conversation_example(tokenizer, template_name, [(question, answer)], kind, with_audio, frame_message)


def conversation_example(tokenizer, template_name: str, turns: list[tuple[str, str]], kind: str = "video",
                         with_audio: bool = True, frame_message: str = "",
                         slot_names: dict[str, str] | None = None,
                         system: str | None = None) -> tuple[list, list[bool]]:
    """Pieces of an instruction example, built by the chat engine's own prompt builder.

    The media message goes before the first question; the conversation is rendered with the
    model's template and tokenized by ``model.chat.builder`` exactly as the engine does, so
    the prompt of turn k is token for token what the engine feeds before answering it. Only
    the answers (with the template's end-of-answer text) carry loss; every question and
    answer is tokenized as plain text.

    Args:
        slot_names: renames slots, e.g. {"video": "audio"} for the paper's audio-branch stages,
            which feed frames (through ImageBind's vision side) where the video tokens go.
        system: replaces the system prompt (None: the template's default for ``kind``, as the engine).
    """
    template = get_template(template_name)
    message, slots = media_message(kind, with_audio=with_audio, frame_message=frame_message)
    prompt = build_prompt(template, Dialogue(turns=list(turns), system=system, media_kind=kind,
                                             media_message=message, slots=tuple(slots)), tokenizer)
    pieces: list = []
    supervised: list[bool] = []
    for part in prompt.parts(tokenizer):
        pieces.append(list(part.ids) if part.ids is not None else (slot_names or {}).get(part.slot, part.slot))
        supervised.append(part.answer)
    return pieces, supervised
