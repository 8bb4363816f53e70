"""The paper's audio-branch training input: frames through ImageBind's vision side.

Video-LLaMA's AL stages 1 and 2 never show the audio branch any audio (section 8.1 of
``shared/reference/videollama.md``). With ``train_flag == 1`` the original folds video frames
(B, T, 3, H, W) to B*T images, runs them through ImageBind-Huge's frozen *vision* encoder
(one L2-normalised 1024-d embedding per frame) and hands those (B, T, 1024) to the audio
position embedding, audio Q-Former and ``audio_llama_proj`` -- the same trainable adapter that
reads ImageBind *audio* clip embeddings at inference. It works because ImageBind puts both
modalities in one embedding space. A still image is a one-frame video (T = 1), as in the
original, which repeats images to ``b c 1 h w``.

One quirk of the original is kept by default: vision embeddings have norm 1 while audio clip
embeddings at inference have norm ``audio.logit_scale`` (20). ``scale`` lets a recipe match
the inference norm instead; ``scale=1.0`` is the paper.

A recipe selects this path by setting ``VideoLlamaConfig.audio_visual_teacher`` (the teacher's
size) and, in its audio stages, calling ``audio_tokens_from_frames`` where a vision stage would
call ``model.encode_video``. The frames are the ones the vision branch gets (CLIP statistics),
resized to the teacher's ``image_size``.
"""

from __future__ import annotations

import contextlib
from pathlib import Path

import torch

from model.config import VideoLlamaConfig
from model.imagebind_vision import ImageBindVisionEncoder
from model.video_llama import VideoLlama
from model.weights.checkpoint import flat_dict, load_pth
from model.weights.convert import check_against, convert_imagebind_vision


def _autocast(device: torch.device):
    # fp16 on CUDA like the original's maybe_autocast; CPU runs in the weights' dtype.
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def freeze(teacher: ImageBindVisionEncoder) -> ImageBindVisionEncoder:
    """The teacher is never trained: no gradients, eval mode."""
    for p in teacher.parameters():
        p.requires_grad_(False)
    return teacher.eval()


def build_teacher(cfg: VideoLlamaConfig, device: str | torch.device = "meta") -> ImageBindVisionEncoder:
    """A frozen teacher of ``cfg.audio_visual_teacher``'s size: random weights, or none on meta."""
    if cfg.audio_visual_teacher is None:
        raise ValueError(f"config {cfg.name!r} has no audio_visual_teacher; set it (e.g. "
                         "{'audio_visual_teacher': {}} for ImageBind-Huge's sizes) to train the audio "
                         "branch on frames")
    with torch.device(device):
        return freeze(ImageBindVisionEncoder(cfg.audio_visual_teacher))


def load_teacher(path: str | Path, cfg: VideoLlamaConfig, device: str | torch.device = "cpu",
                 dtype: torch.dtype = torch.float32) -> ImageBindVisionEncoder:
    """The frozen teacher from ``imagebind_huge.pth`` (only its vision modality is used)."""
    converted = convert_imagebind_vision(flat_dict(load_pth(path), path))
    teacher = build_teacher(cfg, device="meta")
    expected = {k: v.shape for k, v in teacher.state_dict().items()}
    check_against(converted, expected, what="ImageBind vision encoder")
    teacher.load_state_dict({k: v.to(device=device, dtype=dtype) for k, v in converted.items()},
                            strict=True, assign=True)
    return freeze(teacher)


def _as_video(frames: torch.Tensor) -> torch.Tensor:
    if frames.ndim == 4:
        return frames.unsqueeze(1)  # an image batch (B, 3, H, W) is a one-frame video
    if frames.ndim != 5:
        raise ValueError(f"frames must be (B, T, 3, H, W) or images (B, 3, H, W), got {tuple(frames.shape)}")
    return frames


def frame_embeddings_for_audio_branch(teacher: ImageBindVisionEncoder, frames: torch.Tensor,
                                      max_frames: int | None = None, scale: float = 1.0) -> torch.Tensor:
    """Frozen teacher: frames (B, T, 3, H, W) -> per-frame embeddings (B, T, out_dim).

    Args:
        teacher: ImageBind's vision encoder; run without gradients whatever its flags.
        frames: CLIP-normalised frames at the teacher's ``image_size``; images (B, 3, H, W)
            count as T = 1.
        max_frames: the audio position embedding's rows; more frames is an error.
        scale: multiplier on the unit-norm embeddings (1.0 is the paper; see module doc).
    """
    frames = _as_video(frames)
    B, T = frames.shape[:2]
    if max_frames is not None and T > max_frames:
        raise ValueError(f"{T} frames given but the audio position embedding has {max_frames} rows; "
                         f"sample at most {max_frames} frames for the audio branch")
    device = next(teacher.parameters()).device
    with torch.no_grad(), _autocast(device):
        emb = teacher(frames.to(device).flatten(0, 1))  # (B*T, out_dim)
    return emb.float().view(B, T, -1) * scale  # (B, T, out_dim)


def audio_tokens_from_frames(model: VideoLlama, teacher: ImageBindVisionEncoder, frames: torch.Tensor,
                             scale: float = 1.0) -> torch.Tensor:
    """AL-stage media tokens: frames -> teacher -> ``model.audio_tokens`` -> (B, Qa, D).

    Gradients flow into the audio adapter only (position embedding, audio Q-Former,
    ``audio_proj``); the teacher runs under ``no_grad``.
    """
    if model.audio_position_embedding is None:
        raise ValueError("this model has no audio branch (use_audio=False); build it with the audio "
                         "branch to train it on frames")
    rows = model.audio_position_embedding.num_embeddings
    width = model.audio_position_embedding.embedding_dim
    if teacher.cfg.out_dim != width:
        raise ValueError(f"teacher embeddings are {teacher.cfg.out_dim}-d but the audio adapter expects "
                         f"{width}-d; the teacher's out_dim must equal audio.out_dim")
    emb = frame_embeddings_for_audio_branch(teacher, frames, max_frames=rows, scale=scale)
    return model.audio_tokens(emb)  # (B, Qa, D)
