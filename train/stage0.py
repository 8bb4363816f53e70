"""Stage 0 (toy models only): contrastive pre-training of the encoders.

It stands in for EVA-CLIP / BLIP-2 / ImageBind pre-training: the vision encoder + image
Q-Former and the audio encoder learn, CLIP-style (InfoNCE), to match text descriptions read
by a small n-gram text tower; with a word list, the image side also learns, as BLIP-2's
image-grounded generation, to let a small decoder write each frame's description from the
query outputs; and, with attribute labels, to say which shape of which colour is where in
the frame (``AttributeHead``). Afterwards they are frozen. These heads are thrown away.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn.functional as F
from torch import nn

from train.stages import IGNORE


def ngram_ids(text: str, buckets: int, n_max: int = 3) -> list[int]:
    """Hashed word n-grams (1..n_max): bigrams bind attributes ("red circle") to objects."""
    words = text.lower().replace(",", " ").replace(".", " ").split()
    grams = [" ".join(words[i:i + n]) for n in range(1, n_max + 1) for i in range(len(words) - n + 1)]
    return [zlib.crc32(g.encode()) % buckets for g in grams] or [0]


class TextTower(nn.Module):
    """A small text encoder for contrastive training: bag of hashed n-grams -> MLP."""

    def __init__(self, dim: int, buckets: int = 8192, width: int = 256) -> None:
        super().__init__()
        self.buckets = buckets
        self.bag = nn.EmbeddingBag(buckets, width, mode="sum")
        self.mlp = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, width), nn.GELU(),
                                 nn.Linear(width, dim))

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids = [torch.tensor(ngram_ids(t, self.buckets)) for t in texts]
        offsets = torch.tensor([0] + [len(x) for x in ids[:-1]]).cumsum(0)
        dev = self.bag.weight.device
        return self.mlp(self.bag(torch.cat(ids).to(dev), offsets.to(dev)))  # (B, dim)


def info_nce(a: torch.Tensor, b: torch.Tensor, texts: list[str], logit_scale: torch.Tensor,
             hard: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric CLIP loss; items with identical text all count as positives of each other.

    ``hard`` (B*K, D): extra text negatives, K per item (each a description with one attribute
    changed); in-batch negatives alone let an encoder get by on colour, the easiest cue.
    """
    a, b = F.normalize(a.float(), dim=-1), F.normalize(b.float(), dim=-1)
    scale = logit_scale.exp().clamp(max=100)
    logits = scale * a @ b.t()  # (B, B)
    same = torch.tensor([[x == y for y in texts] for x in texts], device=a.device, dtype=torch.float32)
    target = same / same.sum(1, keepdim=True)
    a2b = logits
    if hard is not None:
        h = F.normalize(hard.float(), dim=-1).view(a.shape[0], -1, a.shape[1])  # (B, K, D)
        a2b = torch.cat([logits, scale * torch.einsum("bd,bkd->bk", a, h)], dim=1)  # (B, B+K)
        target = F.pad(target, (0, h.shape[1]))
    return 0.5 * (torch.sum(-target * a2b.log_softmax(1), 1).mean()
                  + torch.sum(-target[:, : logits.shape[0]] * logits.t().log_softmax(1), 1).mean())


def caption_words(text: str) -> list[str]:
    return text.lower().replace(",", " , ").replace(":", " : ").replace(".", " ").split()


class CaptionDecoder(nn.Module):
    """BLIP-2's image-grounded text generation, small: a causal decoder that writes a frame's
    description word by word while attending to the image Q-Former's query outputs.

    Contrast alone lets an encoder match descriptions on their easiest words (colours); to
    write "large red triangle x1 y2, small blue circle ..." the queries must say which shape
    carries which colour where. ``vocab`` is the word list (sorted, so a resumed run rebuilds
    the same ids); unknown words share one id.
    """

    SPECIAL = ("<pad>", "<bos>", "<eos>", "<unk>")

    def __init__(self, vocab: list[str], width: int, layers: int = 2, heads: int = 4, max_len: int = 48) -> None:
        super().__init__()
        self.words = list(self.SPECIAL) + sorted(set(vocab) - set(self.SPECIAL))
        self.index = {w: i for i, w in enumerate(self.words)}
        self.max_len = max_len
        self.embed = nn.Embedding(len(self.words), width)
        self.pos = nn.Parameter(torch.randn(max_len, width) * 0.02)
        layer = nn.TransformerDecoderLayer(width, heads, 2 * width, dropout=0.0, batch_first=True, norm_first=True)
        self.decoder = nn.TransformerDecoder(layer, layers)
        self.out = nn.Sequential(nn.LayerNorm(width), nn.Linear(width, len(self.words)))

    def ids(self, texts: list[str]) -> torch.Tensor:
        """(B, L) word ids: <bos> words <eos>, right-padded with <pad> (0), cut at max_len."""
        bos, eos, unk = (self.index[w] for w in ("<bos>", "<eos>", "<unk>"))
        rows = [[bos] + [self.index.get(w, unk) for w in caption_words(t)][: self.max_len - 1] + [eos] for t in texts]
        out = torch.zeros(len(rows), max(len(r) for r in rows), dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r)
        return out

    def loss(self, queries: torch.Tensor, texts: list[str]) -> torch.Tensor:
        """queries (B, Q, W) -> mean next-word cross-entropy of ``texts``."""
        ids = self.ids(texts).to(queries.device)  # (B, L)
        inp, target = ids[:, :-1], ids[:, 1:]
        L = inp.shape[1]
        x = self.embed(inp) + self.pos[:L]  # (B, L-1, W)
        causal = torch.ones(L, L, dtype=torch.bool, device=queries.device).triu(1)  # True: may not attend
        h = self.decoder(x, queries, tgt_mask=causal, tgt_is_causal=True, tgt_key_padding_mask=inp == 0)
        return F.cross_entropy(self.out(h).flatten(0, 1), target.flatten(), ignore_index=0)


class AttributeHead(nn.Module):
    """Supervised stand-in for the labelled images a real image encoder is pre-trained on.

    One learned query per colour and one per shape name attend over a frame's image-query
    outputs. A colour's query says whether that colour is in the frame, which shape wears it
    and in which position bin along x and y; a shape's query says whether it is there and in
    which colour. Contrast alone left shape nearly undecodable from the frozen features
    (``bench/encoder_probe.py``); these are the probe's own questions, asked during training,
    and what the chat questions need ("What colour is the star?", "Where does the red one go?").
    Attributes are asked only when their answer is unique in the frame.
    """

    def __init__(self, width: int, shapes: tuple[str, ...], colours: tuple[str, ...], bins: int,
                 heads: int = 4) -> None:
        super().__init__()
        self.shapes, self.colours, self.bins = tuple(shapes), tuple(colours), bins
        self.query = nn.Parameter(torch.randn(len(colours) + len(shapes), width) * 0.02)
        self.attn = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm = nn.LayerNorm(width)
        self.by_colour = nn.Linear(width, 1 + len(shapes) + 2 * bins)  # present, shape, x bin, y bin
        self.by_shape = nn.Linear(width, 1 + len(colours))  # present, colour

    def targets(self, frame_objs: list[list[tuple]]) -> dict[str, torch.Tensor]:
        """present (B, C+S) in {0, 1}; shape_of_colour (B, C), place_of_colour (B, C, 2) and
        colour_of_shape (B, S) class ids, IGNORE where absent or not unique."""
        B, C, S = len(frame_objs), len(self.colours), len(self.shapes)
        t = {"present": torch.zeros(B, C + S),
             "shape_of_colour": torch.full((B, C), IGNORE, dtype=torch.long),
             "place_of_colour": torch.full((B, C, 2), IGNORE, dtype=torch.long),
             "colour_of_shape": torch.full((B, S), IGNORE, dtype=torch.long)}
        for b, objs in enumerate(frame_objs):
            colours, shapes = [o[1] for o in objs], [o[2] for o in objs]
            for _, colour, shape, x, y in objs:
                c, k = self.colours.index(colour), self.shapes.index(shape)
                t["present"][b, c] = t["present"][b, C + k] = 1.0
                if colours.count(colour) == 1:
                    t["shape_of_colour"][b, c] = k
                    t["place_of_colour"][b, c] = torch.tensor([x, y])
                if shapes.count(shape) == 1:
                    t["colour_of_shape"][b, k] = c
        return t

    def logits(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """feats (B, Qi, H) -> by colour (B, C, 1+S+2*bins), by shape (B, S, 1+C)."""
        kv = self.norm(feats)
        q = self.query[None].expand(feats.shape[0], -1, -1)  # (B, C+S, H)
        pooled, _ = self.attn(q, kv, kv)
        h = pooled + q  # (B, C+S, H)
        C = len(self.colours)
        return self.by_colour(h[:, :C]), self.by_shape(h[:, C:])

    def loss(self, feats: torch.Tensor, frame_objs: list[list[tuple]]) -> torch.Tensor:
        """Sum of the presence, shape, place and colour losses of the frames ``frame_objs`` describes."""
        t = {k: v.to(feats.device) for k, v in self.targets(frame_objs).items()}
        by_colour, by_shape = self.logits(feats)
        S = len(self.shapes)
        present = torch.cat([by_colour[..., 0], by_shape[..., 0]], dim=1)  # (B, C+S)
        total = F.binary_cross_entropy_with_logits(present, t["present"])
        place = by_colour[..., 1 + S:].reshape(*by_colour.shape[:2], 2, self.bins)  # (B, C, 2, bins)
        for logits, target in ((by_colour[..., 1:1 + S], t["shape_of_colour"]), (place, t["place_of_colour"]),
                               (by_shape[..., 1:], t["colour_of_shape"])):
            if (target != IGNORE).any():
                total = total + F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.flatten(),
                                                ignore_index=IGNORE)
        return total


class ContrastiveHeads(nn.Module):
    """Stage-0 extras that are thrown away afterwards: text towers, pooling heads, temperatures,
    and, when asked for, the frame-caption decoder and the attribute head."""

    def __init__(self, image_width: int, audio_width: int, dim: int = 128, vocab: list[str] | None = None,
                 attributes: AttributeHead | None = None) -> None:
        super().__init__()
        self.image_text = TextTower(dim)
        self.audio_text = TextTower(dim)
        self.image_head = nn.Linear(image_width, dim)
        self.audio_head = nn.Linear(audio_width, dim)
        self.image_scale = nn.Parameter(torch.tensor(2.66))  # log(1/0.07), as CLIP starts
        self.audio_scale = nn.Parameter(torch.tensor(2.66))
        self.caption = CaptionDecoder(vocab, image_width) if vocab else None
        self.attributes = attributes


def image_text_loss(model, heads: ContrastiveHeads, frames: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """frames (B, 3, H, W) against one description each."""
    feats = model.encode_frames(frames[:, None])[:, 0]  # (B, Qi, H)
    return info_nce(heads.image_head(feats.mean(1)), heads.image_text(texts), texts, heads.image_scale)


def audio_text_loss(model, heads: ContrastiveHeads, fbank: torch.Tensor, texts: list[str]) -> torch.Tensor:
    """fbank clips (B, 1, M, F) against one sound description each."""
    emb = model.audio_encoder(fbank)  # (B, out_dim)
    return info_nce(heads.audio_head(emb), heads.audio_text(texts), texts, heads.audio_scale)


