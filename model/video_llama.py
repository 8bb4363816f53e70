"""Video-LLaMA composed from built parts, plus the plain functions that build it.

``VideoLlama`` receives its submodules already built (any branch may be ``None``) and only
wires the data flow (see ARCHITECTURE.md):

    frames -> EVA ViT -> ln_vision -> image Q-Former          (frozen; ``encode_frames``)
           -> + frame position -> video Q-Former -> video_proj (trainable; ``video_tokens``)
    fbank  -> ImageBind audio                                  (frozen; ``encode_clips``)
           -> + audio position -> audio Q-Former -> audio_proj (trainable; ``audio_tokens``)

Frozen encoders run under ``torch.no_grad``; on CUDA every encoder and adapter runs under
fp16 autocast, as the original's ``maybe_autocast`` does. Constructors never touch disk.
"""

from __future__ import annotations

import contextlib

import torch
from torch import nn

from model.audio import ImageBindAudioEncoder
from model.config import VideoLlamaConfig
from model.llm import build_llm
from model.lora import adapter_scope
from model.qformer import BERT_DROPOUT, QFormer
from model.vision import EvaViT, VisionOutputNorm

FROZEN = ("vision_encoder", "ln_vision", "image_qformer", "audio_encoder", "llm")
TRAINABLE = ("frame_position_embedding", "video_qformer", "video_proj",
             "audio_position_embedding", "audio_qformer", "audio_proj")
VISION_PARTS = ("vision_encoder", "ln_vision", "image_qformer", "frame_position_embedding",
                "video_qformer", "video_proj")
AUDIO_PARTS = ("audio_encoder", "audio_position_embedding", "audio_qformer", "audio_proj")


def _device(module: nn.Module) -> torch.device:
    return next(module.parameters()).device


def _autocast(device: torch.device):
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


class VideoLlama(nn.Module):
    """The whole model. Pass built modules by name (see ``FROZEN`` and ``TRAINABLE``)."""

    def __init__(self, *, vision_encoder=None, ln_vision=None, image_qformer=None,
                 frame_position_embedding=None, video_qformer=None, video_proj=None,
                 audio_encoder=None, audio_position_embedding=None, audio_qformer=None,
                 audio_proj=None, llm=None) -> None:
        super().__init__()
        self.vision_encoder = vision_encoder
        self.ln_vision = ln_vision
        self.image_qformer = image_qformer
        self.frame_position_embedding = frame_position_embedding
        self.video_qformer = video_qformer
        self.video_proj = video_proj
        self.audio_encoder = audio_encoder
        self.audio_position_embedding = audio_position_embedding
        self.audio_qformer = audio_qformer
        self.audio_proj = audio_proj
        self.llm = llm
        # Set by the loader (model/checkpoint.py); plain attributes, not state.
        self.config: VideoLlamaConfig | None = None
        self.tokenizer = None
        self.fingerprints: dict[str, str] = {}
        self.llm_adapter: str | None = None  # name of this folder's LoRA adapter inside ``llm`` (model/lora.py)
        self.generation_defaults = None  # the folder's GenerationSettings (generation_config.json)

    # -- helpers -------------------------------------------------------------------
    def _require(self, names: tuple[str, ...], what: str) -> None:
        missing = [n for n in names if getattr(self, n) is None]
        if missing:
            raise RuntimeError(f"this model cannot {what}: it has no {', '.join(missing)} "
                               "(the branch is disabled in its config or was not loaded)")

    def llm_scope(self, media: bool):
        """Context for running the LLM on one prompt: this model's LoRA adapter when the prompt
        carries media, the plain frozen LLM when it does not (see ``model.lora.adapter_scope``)."""
        return adapter_scope(self.llm, self.llm_adapter if media else None)

    def train(self, mode: bool = True) -> VideoLlama:
        """Like ``nn.Module.train`` but the frozen parts always stay in eval mode."""
        super().train(mode)
        for name in FROZEN:
            module = getattr(self, name)
            if module is not None:
                module.eval()
        return self

    # -- vision --------------------------------------------------------------------
    def encode_frames(self, frames: torch.Tensor) -> torch.Tensor:
        """Frozen vision part: frames (B, T, 3, H, W) -> image-query features (B, T, Qi, H)."""
        self._require(("vision_encoder", "ln_vision", "image_qformer"), "encode frames")
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"frames must be (B, T, 3, H, W), got {tuple(frames.shape)}")
        B, T = frames.shape[:2]
        device = _device(self.vision_encoder)
        x = frames.to(device).flatten(0, 1)  # (B*T, 3, H, W)
        with torch.no_grad(), _autocast(device):
            tokens = self.vision_encoder(x)  # (B*T, 1+P, W)
            tokens = self.ln_vision(tokens.to(self.ln_vision.weight.dtype))
            queries = self.image_qformer(tokens)  # (B*T, Qi, H)
        return queries.view(B, T, *queries.shape[1:])  # (B, T, Qi, H)

    def video_tokens(self, frame_feats: torch.Tensor) -> torch.Tensor:
        """Trainable vision part: (B, T, Qi, H) -> LLM soft tokens (B, Qv, D)."""
        self._require(("frame_position_embedding", "video_qformer", "video_proj"), "make video tokens")
        if frame_feats.ndim != 4:
            raise ValueError(f"frame features must be (B, T, Q, H), got {tuple(frame_feats.shape)}")
        B, T, Q, H = frame_feats.shape
        rows = self.frame_position_embedding.num_embeddings
        if T > rows:
            raise ValueError(f"{T} frames given but the frame position embedding has {rows} rows "
                             f"(max_frame_pos); sample at most {rows} frames")
        device = _device(self.video_qformer)
        with _autocast(device):
            pos = self.frame_position_embedding(torch.arange(T, device=device))  # (T, H)
            # One vector per frame, shared by all queries of that frame.
            x = frame_feats.to(device) + pos[None, :, None, :]  # (B, T, Q, H)
            x = x.reshape(B, T * Q, H)  # (B, T*Q, H)
            return self.video_proj(self.video_qformer(x))  # (B, Qv, D)

    def encode_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames (B, T, 3, H, W) -> (B, Qv, D)."""
        return self.video_tokens(self.encode_frames(frames))

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        """Images (B, 3, H, W) -> (B, Qv, D): a video of one frame, as the original."""
        if images.ndim != 4:
            raise ValueError(f"images must be (B, 3, H, W), got {tuple(images.shape)}")
        return self.encode_video(images[:, None])

    # -- audio ---------------------------------------------------------------------
    def encode_clips(self, fbank: torch.Tensor) -> torch.Tensor:
        """Frozen audio part: fbank clips (B, S, 1, M, F) -> clip embeddings (B, S, out_dim)."""
        self._require(("audio_encoder",), "encode audio clips")
        if fbank.ndim != 5:
            raise ValueError(f"fbank clips must be (B, S, 1, M, F), got {tuple(fbank.shape)}")
        B, S = fbank.shape[:2]
        device = _device(self.audio_encoder)
        with torch.no_grad(), _autocast(device):
            emb = self.audio_encoder(fbank.to(device).flatten(0, 1))  # (B*S, out_dim)
        return emb.view(B, S, -1)  # (B, S, out_dim)

    def audio_tokens(self, clip_embs: torch.Tensor) -> torch.Tensor:
        """Trainable audio part: (B, S, out_dim) -> LLM soft tokens (B, Qa, D)."""
        self._require(("audio_position_embedding", "audio_qformer", "audio_proj"), "make audio tokens")
        if clip_embs.ndim != 3:
            raise ValueError(f"clip embeddings must be (B, S, E), got {tuple(clip_embs.shape)}")
        S = clip_embs.shape[1]
        rows = self.audio_position_embedding.num_embeddings
        if S > rows:
            raise ValueError(f"{S} audio clips given but the audio position embedding has {rows} rows; "
                             f"use at most {rows} clips")
        device = _device(self.audio_qformer)
        with _autocast(device):
            pos = self.audio_position_embedding(torch.arange(S, device=device))  # (S, E)
            x = clip_embs.to(device) + pos[None]  # (B, S, E)
            return self.audio_proj(self.audio_qformer(x))  # (B, Qa, D)

    def encode_audio(self, fbank: torch.Tensor) -> torch.Tensor:
        """Fbank clips (B, S, 1, M, F) -> (B, Qa, D)."""
        return self.audio_tokens(self.encode_clips(fbank))

    # -- prompt --------------------------------------------------------------------
    def embed_interleaved(self, pieces: list[torch.Tensor]) -> torch.Tensor:
        """Concatenate prompt pieces into LLM input embeddings (1, L, D).

        Each piece is either token ids (1, n) (integer dtype) or media embeddings (1, n, D),
        in prompt order. Media is cast to the LLM's embedding dtype and device.
        """
        self._require(("llm",), "embed a prompt")
        table = self.llm.get_input_embeddings()
        out = []
        for i, piece in enumerate(pieces):
            if not piece.is_floating_point():
                if piece.ndim != 2 or piece.shape[0] != 1:
                    raise ValueError(f"piece {i}: token ids must be (1, n), got {tuple(piece.shape)}")
                out.append(table(piece.to(table.weight.device)))  # (1, n, D)
            else:
                if piece.ndim != 3 or piece.shape[0] != 1 or piece.shape[2] != table.embedding_dim:
                    raise ValueError(f"piece {i}: media embeddings must be (1, n, {table.embedding_dim}), "
                                     f"got {tuple(piece.shape)}")
                out.append(piece.to(device=table.weight.device, dtype=table.weight.dtype))
        if not out:
            raise ValueError("embed_interleaved needs at least one piece")
        return torch.cat(out, dim=1)  # (1, L, D)


# -- builders --------------------------------------------------------------------------
def build_vision_branch(cfg: VideoLlamaConfig) -> dict[str, nn.Module]:
    """Modules of the vision-language branch, randomly initialised."""
    H = cfg.video_qformer.hidden_size
    return {
        "vision_encoder": EvaViT(cfg.vision),
        "ln_vision": VisionOutputNorm(cfg.vision),
        "image_qformer": QFormer(cfg.image_qformer),
        "frame_position_embedding": nn.Embedding(cfg.max_frame_pos, cfg.image_qformer.hidden_size),
        "video_qformer": QFormer(cfg.video_qformer, dropout=BERT_DROPOUT),
        "video_proj": nn.Linear(H, cfg.llm.hidden_size),
    }


def build_audio_branch(cfg: VideoLlamaConfig) -> dict[str, nn.Module]:
    """Modules of the audio-language branch, randomly initialised."""
    return {
        "audio_encoder": ImageBindAudioEncoder(cfg.audio),
        "audio_position_embedding": nn.Embedding(cfg.audio.num_clips, cfg.audio.out_dim),
        "audio_qformer": QFormer(cfg.audio_qformer, dropout=BERT_DROPOUT),
        "audio_proj": nn.Linear(cfg.audio_qformer.hidden_size, cfg.llm.hidden_size),
    }


def build_model(cfg: VideoLlamaConfig, device: str | torch.device = "meta", with_llm: bool = True) -> VideoLlama:
    """Build the model from ``cfg`` alone (no disk): random weights, or none on ``"meta"``.

    The frozen/trainable split is applied (``freeze_frozen_parts``); ``model.config`` is set.
    """
    parts: dict[str, nn.Module] = {}
    with torch.device(device):
        if cfg.use_vision:
            parts.update(build_vision_branch(cfg))
        if cfg.use_audio:
            parts.update(build_audio_branch(cfg))
    if with_llm:
        parts["llm"] = build_llm(cfg.llm, device)
    model = VideoLlama(**parts)
    model.config = cfg
    freeze_frozen_parts(model)
    return model


def freeze_frozen_parts(model: VideoLlama) -> VideoLlama:
    """Mark the original's trainable set (``TRAINABLE``) trainable, everything else frozen.

    Frozen modules are put in eval mode (and ``VideoLlama.train`` keeps them there).
    """
    for p in model.parameters():
        p.requires_grad_(False)
    for name in TRAINABLE:
        module = getattr(model, name)
        if module is not None:
            for p in module.parameters():
                p.requires_grad_(True)
    for name in FROZEN:
        module = getattr(model, name)
        if module is not None:
            module.eval()
    return model


def trainable_parameters(model: VideoLlama) -> dict[str, nn.Parameter]:
    """Name -> parameter for every trainable parameter, in ``TRAINABLE`` order."""
    out = {}
    for name in TRAINABLE:
        module = getattr(model, name)
        if module is not None:
            out.update({f"{name}.{k}": p for k, p in module.named_parameters() if p.requires_grad})
    return out
