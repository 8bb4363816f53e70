"""Under-the-hood pictures for educators, drawn with numpy and PIL (no plotting library).

- the sampled frames, each captioned with its timestamp;
- the audio clips as waveforms and as log-power spectrograms, one row per clip;
- the pipeline as a diagram of boxes carrying the live tensor shapes, token counts and
  times the engine's trace reports;
- the final prompt and a table of stage timings.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from model.chat.trace import TurnTrace

BACKGROUND = (255, 255, 255)
INK = (30, 30, 30)
MUTED = (110, 110, 110)
WAVE = (37, 99, 235)
LANE_COLOURS = {"vision": (219, 234, 254), "audio": (254, 243, 199), "text": (220, 252, 231)}


def _font(size: int) -> ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)  # scalable when Pillow has FreeType
    except (TypeError, OSError):
        return ImageFont.load_default()


def _as_numpy(array: Any) -> np.ndarray | None:
    if array is None:
        return None
    if hasattr(array, "detach"):  # a torch tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array)


# -- frames --------------------------------------------------------------------------


def frame_gallery(media: Any) -> list[tuple[Image.Image, str]]:
    """(picture, caption) per sampled frame, for a gr.Gallery."""
    frames = _as_numpy(getattr(media, "frames_uint8", None))
    if frames is None or frames.size == 0:
        return []
    stamps = list(getattr(media, "timestamps", None) or [])
    out = []
    for i, frame in enumerate(frames):  # frame: (S, S, 3) uint8
        caption = f"{float(stamps[i]):.2f} s" if i < len(stamps) else f"frame {i + 1}"
        out.append((Image.fromarray(frame.astype(np.uint8)), caption))
    return out


# -- audio ---------------------------------------------------------------------------


def _clip_rows(media: Any) -> tuple[np.ndarray | None, list[float]]:
    waves = _as_numpy(getattr(media, "audio_waveforms", None))
    if waves is None or waves.size == 0 or not getattr(media, "has_audio", False):
        return None, []
    waves = waves.reshape(waves.shape[0], -1).astype(np.float32)  # (S, samples)
    starts = [float(s) for s in (getattr(media, "clip_starts", None) or [])]
    return waves, starts


def waveform_image(media: Any, width: int = 720, row_height: int = 56) -> Image.Image | None:
    """One waveform row per audio clip, labelled with the clip's start time."""
    waves, starts = _clip_rows(media)
    if waves is None:
        return None
    label_w = 90
    image = Image.new("RGB", (width, row_height * len(waves)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    plot_w = width - label_w
    for row, wave in enumerate(waves):
        top, mid = row * row_height, row * row_height + row_height // 2
        start = f"{starts[row]:.2f} s" if row < len(starts) else ""
        draw.text((6, mid - 8), f"clip {row + 1}\n{start}", fill=MUTED, font=font)
        # Min/max envelope per pixel column, so short peaks still show.
        columns = np.array_split(wave, plot_w) if len(wave) >= plot_w else [wave[i:i + 1] for i in range(len(wave))]
        peak = max(float(np.abs(wave).max()), 1e-6)
        half = row_height / 2 - 4
        for x, chunk in enumerate(columns):
            if chunk.size == 0:
                continue
            lo, hi = float(chunk.min()) / peak, float(chunk.max()) / peak
            draw.line([(label_w + x, mid - hi * half), (label_w + x, mid - lo * half)], fill=WAVE)
        draw.line([(0, top + row_height - 1), (width, top + row_height - 1)], fill=(230, 230, 230))
    return image


def _colour_map(values: np.ndarray) -> np.ndarray:
    """Values in [0, 1] -> RGB uint8 along dark blue -> magenta -> yellow."""
    stops = np.array([[10, 10, 40], [90, 20, 130], [200, 50, 100], [250, 150, 40], [250, 250, 160]], float)
    pos = np.clip(values, 0, 1) * (len(stops) - 1)
    low = np.floor(pos).astype(int).clip(0, len(stops) - 2)
    frac = (pos - low)[..., None]
    return (stops[low] * (1 - frac) + stops[low + 1] * frac).astype(np.uint8)


def log_spectrogram(wave: np.ndarray, n_fft: int = 400, hop: int = 160) -> np.ndarray:
    """(freq bins, frames) log power of a mono signal: 25 ms windows, 10 ms hop at 16 kHz."""
    if len(wave) < n_fft:
        wave = np.pad(wave, (0, n_fft - len(wave)))
    count = 1 + (len(wave) - n_fft) // hop
    index = np.arange(n_fft)[None, :] + hop * np.arange(count)[:, None]  # (frames, n_fft)
    spectrum = np.fft.rfft(wave[index] * np.hanning(n_fft), axis=1)  # (frames, n_fft//2+1)
    return np.log10(np.abs(spectrum) ** 2 + 1e-10).T  # (freq, frames)


def spectrogram_image(media: Any, width: int = 720, row_height: int = 64) -> Image.Image | None:
    """One spectrogram row per clip (low frequencies at the bottom), shared colour scale."""
    waves, starts = _clip_rows(media)
    if waves is None:
        return None
    specs = [log_spectrogram(w) for w in waves]
    top = max(float(s.max()) for s in specs)
    label_w = 90
    image = Image.new("RGB", (width, row_height * len(specs)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    font = _font(13)
    for row, spec in enumerate(specs):
        scaled = (spec - (top - 8.0)) / 8.0  # show the top 80 dB
        rgb = _colour_map(scaled[::-1])  # flip: high frequencies on top
        tile = Image.fromarray(rgb).resize((width - label_w, row_height - 2), Image.BILINEAR)
        image.paste(tile, (label_w, row * row_height))
        start = f"{starts[row]:.2f} s" if row < len(starts) else ""
        draw.text((6, row * row_height + row_height // 2 - 8), f"clip {row + 1}\n{start}", fill=MUTED, font=font)
    return image


# -- pipeline diagram ----------------------------------------------------------------


def _text_size(draw: ImageDraw.ImageDraw, text: str, font) -> tuple[int, int]:
    box = draw.multiline_textbbox((0, 0), text, font=font)
    return box[2] - box[0], box[3] - box[1]


def pipeline_diagram(stages: list[dict[str, Any]], width: int = 760) -> Image.Image:
    """Boxes top to bottom, one per stage, with its shape, token count and time.

    `stages` items: {"name", "lane" ("vision"/"audio"/"text"), "detail"}; vision and audio
    stages sit side by side in two columns, text stages (prompt, LLM) span the width below.
    """
    font, small = _font(15), _font(12)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    lanes = {"vision": [s for s in stages if s.get("lane") == "vision"],
             "audio": [s for s in stages if s.get("lane") == "audio"]}
    text = [s for s in stages if s.get("lane") not in lanes]
    box_h, gap, margin = 58, 22, 16
    rows = max([len(v) for v in lanes.values()] + [0])
    height = margin * 2 + (rows + len(text)) * (box_h + gap)
    image = Image.new("RGB", (width, max(height, 80)), BACKGROUND)
    draw = ImageDraw.Draw(image)
    columns = [name for name, items in lanes.items() if items]
    col_w = (width - margin * (len(columns) + 1)) // max(len(columns), 1)
    bottoms = []
    for c, lane in enumerate(columns):
        x = margin + c * (col_w + margin)
        for r, stage in enumerate(lanes[lane]):
            y = margin + r * (box_h + gap)
            _box(draw, (x, y, x + col_w, y + box_h), stage, lane, font, small, probe)
            if r:
                _arrow(draw, x + col_w // 2, y - gap, y)
        bottoms.append((x + col_w // 2, margin + len(lanes[lane]) * (box_h + gap) - gap))
    for r, stage in enumerate(text):
        y = margin + (rows + r) * (box_h + gap)
        _box(draw, (margin, y, width - margin, y + box_h), stage, "text", font, small, probe)
        sources = bottoms if r == 0 else [(width // 2, y - gap)]
        for x, top in sources:
            _arrow(draw, x, top, y, target_x=width // 2 if r == 0 else x)
    return image


def _box(draw, rect, stage: dict, lane: str, font, small, probe) -> None:
    draw.rounded_rectangle(rect, radius=8, fill=LANE_COLOURS.get(lane, (240, 240, 240)), outline=(120, 120, 120))
    x0, y0, x1, _ = rect
    draw.text((x0 + 10, y0 + 7), str(stage.get("name", "")), fill=INK, font=font)
    detail = str(stage.get("detail", ""))
    # Shorten a detail line that would run past the box edge.
    while len(detail) > 4 and _text_size(probe, detail, small)[0] > x1 - x0 - 20:
        detail = detail[:-4] + "..."
    draw.text((x0 + 10, y0 + 31), detail, fill=MUTED, font=small)


def _arrow(draw, x: int, y0: int, y1: int, target_x: int | None = None) -> None:
    tx = x if target_x is None else target_x
    draw.line([(x, y0), (tx, y1 - 2)], fill=MUTED, width=2)
    draw.polygon([(tx - 5, y1 - 8), (tx + 5, y1 - 8), (tx, y1 - 1)], fill=MUTED)


# -- from the engine's trace to the page -----------------------------------------------


def _shape(shape: Any) -> str:
    return " x ".join(str(int(d)) for d in shape) if isinstance(shape, (list, tuple)) else "-"


def _ms(seconds: Any) -> str:
    return "" if seconds is None else f" · {float(seconds) * 1000:.0f} ms"


def stages_from_trace(trace: TurnTrace | None) -> list[dict[str, Any]]:
    """Diagram stages from the engine's trace of the last turn (see model/chat/trace.py)."""
    if trace is None:
        return []
    shapes, t, tokens = trace.shapes, trace.timings, trace.tokens
    cached = "from the media cache"
    stages = []
    if shapes.video_tokens is not None:
        stages += [
            {"lane": "vision", "name": "Frames (CLIP-normalised)",
             "detail": _shape(shapes.frames) + _ms(t.decode) if shapes.frames else cached},
            {"lane": "vision", "name": "EVA ViT + image Q-Former (frozen)",
             "detail": _shape(shapes.frame_features) + _ms(t.vision_encode)},
            {"lane": "vision", "name": "frame positions + video Q-Former + video_proj",
             "detail": f"{_shape(shapes.video_tokens)} · {shapes.video_tokens[1]} soft tokens"},
        ]
    if shapes.audio_tokens is not None:
        stages += [
            {"lane": "audio", "name": "Audio clips (log-mel fbank)",
             "detail": _shape(shapes.fbank) if shapes.fbank else cached},
            {"lane": "audio", "name": "ImageBind audio encoder (frozen)",
             "detail": _shape(shapes.clip_embeddings) + _ms(t.audio_encode)},
            {"lane": "audio", "name": "clip positions + audio Q-Former + audio_proj",
             "detail": f"{_shape(shapes.audio_tokens)} · {shapes.audio_tokens[1]} soft tokens"},
        ]
    if shapes.prompt_embeds is not None:
        stages.append({"lane": "text", "name": "Prompt: text tokens with media embeddings spliced in",
                       "detail": f"{_shape(shapes.prompt_embeds)} · {tokens.prompt} tokens "
                                 f"({tokens.media} media, {tokens.reused} reused from "
                                 f"the KV cache)" + _ms(t.embed)})
        speed = trace.tokens_per_second
        stages.append({"lane": "text", "name": "LLM: stream the answer",
                       "detail": f"{tokens.new} new tokens" + _ms(t.generate)
                                 + (f" · {speed:.1f} tokens/s" if speed else "")
                                 + (f" · first token after {t.first_token:.2f} s"
                                    if t.first_token is not None else "")})
    return stages


def timing_rows(trace: TurnTrace | None) -> list[list[Any]]:
    """[stage, milliseconds] for each stage the last turn ran."""
    return [] if trace is None else [[name, round(s * 1000, 1)] for name, s in trace.timings.rows()]


def _pad_top(image: Image.Image | None, pixels: int = 40) -> Image.Image | None:
    """Room above a picture for the label Gradio draws over its top-left corner."""
    if image is None:
        return None
    out = Image.new("RGB", (image.width, image.height + pixels), BACKGROUND)
    out.paste(image, (0, pixels))
    return out


def render(session: Any, engine: Any) -> tuple:
    """(frames, waveform, spectrogram, diagram, prompt, timing rows, notes) for the tab."""
    media = getattr(session, "media", None)
    conv = getattr(session, "conv", None)
    trace = engine.trace(conv) if conv is not None else None
    if media is None:
        empty_note = "Load a file in the Chat tab (and ask a question) to see what the model receives."
        return [], None, None, None, "", [], empty_note
    stages = stages_from_trace(trace)
    diagram = pipeline_diagram(stages) if stages else None
    notes = [str(n) for n in ((trace.notes if trace else None) or getattr(media, "notes", None) or [])]
    if trace is None:
        notes.insert(0, "Ask a question in the Chat tab to see the prompt, shapes and timings.")
    return (frame_gallery(media), _pad_top(waveform_image(media)), _pad_top(spectrogram_image(media)),
            _pad_top(diagram),
            trace.prompt if trace else "", timing_rows(trace), "\n".join(f"- {n}" for n in notes))


def build_tab(chat_state, tab, engine) -> None:
    """Lay out the Under-the-hood tab; it refreshes when opened and on its button."""
    import gradio as gr  # the drawing functions above work without gradio

    gr.Markdown("What the model received for the file and question in the **Chat** tab.")
    refresh = gr.Button("Refresh", size="sm")
    notes = gr.Markdown("", elem_id="inspect-notes")
    frames = gr.Gallery(label="Sampled frames", columns=8, height=200, object_fit="contain",
                        elem_id="inspect-frames")
    with gr.Row():
        wave = gr.Image(label="Audio clips: waveform", type="pil", interactive=False)
        spec = gr.Image(label="Audio clips: spectrogram", type="pil", interactive=False)
    diagram = gr.Image(label="Pipeline: live shapes, tokens and times", type="pil", interactive=False,
                       elem_id="inspect-diagram")
    prompt = gr.Code(label="Final prompt (each <ImageHere> is replaced by media embeddings)", language=None,
                     elem_id="inspect-prompt")
    timings = gr.Dataframe(headers=["stage", "milliseconds"], label="Stage timings", interactive=False)
    outputs = [frames, wave, spec, diagram, prompt, timings, notes]
    fn = functools.partial(_render_for_page, engine)
    tab.select(fn, [chat_state], outputs, api_visibility="undocumented", concurrency_id="inspect")
    refresh.click(fn, [chat_state], outputs, api_name="inspect", concurrency_id="inspect")


def _render_for_page(engine, session):
    return render(session, engine)
