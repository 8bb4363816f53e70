"""Clip-level attribute questions on the video soft tokens: what the LLM must be able to read.

``python -m experiments.soft_token_probe`` found the bundled model's Video Q-Former dropping what
the frozen frame features hold: the colour of a named shape 0.90 -> 0.80, its shape 0.86 -> 0.72,
and motion at chance on both (the model answered the same with its frame position embedding
zeroed: it never learned to use frame order). The only signal the Q-Former got was the LLM's
next-token loss, through a 135M model and its LoRA, one answer word per clip.

This head asks the soft tokens directly, as the stage-0 ``AttributeHead`` asks the frame features:
one learned query per shape name, per colour name and one for the count attend over a clip's
(Qv, D) soft tokens, and linear read-outs say

* per shape: whether it is in the clip, its colour, how it moves, when it appears (from the start
  or at one of the world's later times) and whether it leaves before the end;
* per colour: whether it is in the clip and which shape wears it;
* the number of shapes.

A shape's attributes are asked only when no other shape of its kind is in the clip (a colour's
shape when the colour is unique), so every question has one answer. The head is used in training
only (``StageSpec.clip_attribute_weight``); the model folder never holds it.

With ``words`` (the LLM's input embeddings of the answer words, ``answer_words``), a shape's colour
and motion and a colour's shape are read differently: the query's attention mixes the soft tokens
themselves, with no value projection, and the mix is scored by its cosine with each answer word's
embedding. The soft tokens must then carry the answers as the LLM's own word directions, the form
its frozen layers already copy from a prompt, rather than a code only the head can read
(``StageSpec.clip_attribute_readout = "words"``).

``"words+time"`` adds two word questions per shape beside the linear appear and leaves read-outs:
" start" or " later" (is it there from the start?) and " stays" or " leaves" (does it stay to the
end?), the words the world's temporal answers use.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from train.stages import IGNORE
from train.world.scene import APPEAR_TIMES, COLOURS, MOTIONS, SHAPES

MAX_SHAPES = 3  # the world draws 1 to 3 shapes per clip
APPEAR_CLASSES = (0.0, *APPEAR_TIMES)  # from the start, or one of the world's appear times
PREFIX = "clip_attributes."  # the head's parameters' names in a stage's training state
TIME_WORDS = ("start", "later")  # index 1: the shape appears after the start
END_WORDS = ("stays", "leaves")  # index 1: the shape leaves before the end


@dataclass
class AnswerWords:
    """The LLM's input embeddings of the answer words, one row each, in the world's order."""

    colours: torch.Tensor  # (len(COLOURS), D)
    shapes: torch.Tensor  # (len(SHAPES), D)
    motions: torch.Tensor  # (len(MOTIONS), D)
    times: torch.Tensor | None = None  # (2, D): TIME_WORDS, or None: no word questions about time
    ends: torch.Tensor | None = None  # (2, D): END_WORDS (given with ``times``)


def answer_words(tokenizer, embeddings: torch.Tensor, time: bool = False) -> AnswerWords:
    """Each colour, shape and motion word (with ``time`` also TIME_WORDS and END_WORDS) as the LLM
    reads it after a space (" red"): the mean of its tokens' input embeddings (``embeddings``: the
    (vocab, D) table)."""
    def rows(words) -> torch.Tensor:
        out = []
        for word in words:
            ids = tokenizer(" " + word, add_special_tokens=False)["input_ids"]
            out.append(embeddings[ids].float().mean(0))
        return torch.stack(out)

    with torch.no_grad():
        extra = dict(times=rows(TIME_WORDS), ends=rows(END_WORDS)) if time else {}
        return AnswerWords(colours=rows(COLOURS), shapes=rows(SHAPES), motions=rows(MOTIONS), **extra)


def appear_class(appear: float) -> int:
    """Index into ``APPEAR_CLASSES`` of the nearest time."""
    return min(range(len(APPEAR_CLASSES)), key=lambda k: abs(APPEAR_CLASSES[k] - appear))


class ClipAttributeHead(nn.Module):
    # per shape query: present, colour, motion, appear time, leaves
    SHAPE_OUT = 1 + len(COLOURS) + len(MOTIONS) + len(APPEAR_CLASSES) + 1

    def __init__(self, width: int, heads: int = 4, words: AnswerWords | None = None) -> None:
        super().__init__()
        self.query = nn.Parameter(torch.randn(len(SHAPES) + len(COLOURS) + 1, width) * 0.02)
        self.norm = nn.LayerNorm(width)
        self.attn = nn.MultiheadAttention(width, heads if width % heads == 0 else 1, batch_first=True)
        self.by_shape = nn.Linear(width, self.SHAPE_OUT)
        self.by_colour = nn.Linear(width, 1 + len(SHAPES))  # present, shape
        self.count = nn.Linear(width, MAX_SHAPES)  # 1, 2 or 3 shapes
        self.words = words is not None
        self.time_words = words is not None and words.times is not None
        if words is not None:
            # Buffers, not parameters: the words are the LLM's, and the training state never holds them.
            for name in ("colours", "shapes", "motions") + (("times", "ends") if self.time_words else ()):
                self.register_buffer(f"{name}_words", F.normalize(getattr(words, name).float(), dim=-1),
                                     persistent=False)
            self.word_key = nn.Linear(width, width, bias=False)
            self.word_scale = nn.Parameter(torch.tensor(10.0))  # cosines in [-1, 1] -> logits

    def targets(self, scenes) -> dict[str, torch.Tensor]:
        """Class ids per clip (IGNORE where the question has no single answer) and presence flags."""
        B, S, C = len(scenes), len(SHAPES), len(COLOURS)
        t = {"present": torch.zeros(B, S + C),
             **{k: torch.full((B, S), IGNORE, dtype=torch.long) for k in ("colour", "motion", "appear", "leaves")},
             "shape": torch.full((B, C), IGNORE, dtype=torch.long),
             "count": torch.tensor([min(len(sc.shapes), MAX_SHAPES) - 1 for sc in scenes])}
        for b, scene in enumerate(scenes):
            shapes = [s.shape for s in scene.shapes]
            colours = [s.colour for s in scene.shapes]
            for s in scene.shapes:
                k, c = SHAPES.index(s.shape), COLOURS.index(s.colour)
                t["present"][b, k] = t["present"][b, S + c] = 1.0
                if shapes.count(s.shape) == 1:
                    t["colour"][b, k] = c
                    t["motion"][b, k] = MOTIONS.index(s.motion)
                    t["appear"][b, k] = appear_class(s.appear)
                    t["leaves"][b, k] = int(s.leave < scene.config.duration)
                if colours.count(s.colour) == 1:
                    t["shape"][b, c] = k
        return t

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Soft tokens (B, Qv, D) -> per shape (B, S, SHAPE_OUT, then 2 + 2 time-word logits with
        ``time_words``), per colour (B, C, 1+S), count (B, 3)."""
        kv = self.norm(tokens.float())
        q = self.query[None].expand(tokens.shape[0], -1, -1)  # (B, S+C+1, D)
        pooled, _ = self.attn(q, kv, kv)
        h = pooled + q  # (B, S+C+1, D)
        S, C = len(SHAPES), len(COLOURS)
        by_shape, by_colour = self.by_shape(h[:, :S]), self.by_colour(h[:, S:S + C])
        if self.words:
            by_shape, by_colour = self._word_readout(tokens.float(), kv, q, by_shape, by_colour)
        return by_shape, by_colour, self.count(h[:, -1])

    def _word_readout(self, tokens, kv, q, by_shape, by_colour):
        """Colour, motion (per shape) and shape (per colour) logits as cosines of a mix of the raw
        soft tokens with the answer words; the other read-outs stay linear."""
        S, C, M = len(SHAPES), len(COLOURS), len(MOTIONS)
        scores = q[:, :S + C] @ self.word_key(kv).transpose(1, 2) / kv.shape[-1] ** 0.5  # (B, S+C, Qv)
        mix = F.normalize(scores.softmax(-1) @ tokens, dim=-1)  # (B, S+C, D): the tokens, not a projection
        colour = self.word_scale * mix[:, :S] @ self.colours_words.T  # (B, S, C)
        motion = self.word_scale * mix[:, :S] @ self.motions_words.T  # (B, S, M)
        shape = self.word_scale * mix[:, S:] @ self.shapes_words.T  # (B, C, S)
        # The linear columns these replace stay in by_shape / by_colour (untrained here): one layout
        # of outputs and targets for both read-outs.
        by_shape = torch.cat([by_shape[..., :1], colour, motion, by_shape[..., 1 + C + M:]], dim=-1)
        if self.time_words:  # asked beside the linear appear and leaves columns, which stay trained
            times = self.word_scale * mix[:, :S] @ self.times_words.T  # (B, S, 2)
            ends = self.word_scale * mix[:, :S] @ self.ends_words.T  # (B, S, 2)
            by_shape = torch.cat([by_shape, times, ends], dim=-1)
        return by_shape, torch.cat([by_colour[..., :1], shape], dim=-1)

    def loss(self, tokens: torch.Tensor, scenes) -> torch.Tensor:
        """Sum of the presence, colour, motion, appear, leaves, shape and count losses (and, with
        ``time_words``, the start/later and stays/leaves word questions)."""
        t = {k: v.to(tokens.device) for k, v in self.targets(scenes).items()}
        by_shape, by_colour, count = self(tokens)
        pieces = []
        if self.time_words:
            later = torch.where(t["appear"] == IGNORE, IGNORE, (t["appear"] > 0).long())
            pieces = [(by_shape[..., -4:-2], later), (by_shape[..., -2:], t["leaves"])]
            by_shape = by_shape[..., :self.SHAPE_OUT]
        C, M, A = len(COLOURS), len(MOTIONS), len(APPEAR_CLASSES)
        present = torch.cat([by_shape[..., 0], by_colour[..., 0]], dim=1)  # (B, S+C)
        total = F.binary_cross_entropy_with_logits(present, t["present"]) + F.cross_entropy(count, t["count"])
        cuts = {"colour": (1, 1 + C), "motion": (1 + C, 1 + C + M), "appear": (1 + C + M, 1 + C + M + A)}
        pieces += [(by_shape[..., a:b], t[k]) for k, (a, b) in cuts.items()]
        pieces.append((by_colour[..., 1:], t["shape"]))
        for logits, target in pieces:
            if (target != IGNORE).any():
                total = total + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.flatten(),
                                                ignore_index=IGNORE)
        leaves, target = by_shape[..., -1], t["leaves"]
        keep = target != IGNORE
        if keep.any():
            total = total + F.binary_cross_entropy_with_logits(leaves[keep], target[keep].float())
        return total


def clip_batch(n_clips: int, batch: int, g: torch.Generator) -> torch.Tensor:
    """Clip indices of one attribute batch, drawn uniformly with replacement."""
    return torch.randint(n_clips, (batch,), generator=g)
