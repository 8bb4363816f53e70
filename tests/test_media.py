"""Frames and images: sampling formula, decoded content, colour, rotation, resize modes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from model.config import CLIP_MEAN, CLIP_STD
from model.media import LoadOptions, MediaInput, frame_message, load_media
from tests import media_factory as mf

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _mean_rgb(frame: np.ndarray) -> np.ndarray:
    return frame.reshape(-1, 3).mean(axis=0)


def test_uniform_indices_timestamps_and_message_follow_the_formula(tmp_path):
    path = mf.video(tmp_path / "ramp.mp4", source="ramp", duration=2.0, gop=10)  # 50 frames
    m = load_media(path, LoadOptions(use_audio=False))
    expected = [int(i * 50 / 8) for i in range(8)]  # arange(0, n, n/T) cast to int
    assert expected == [0, 6, 12, 18, 25, 31, 37, 43]
    assert m.frame_indices == expected
    assert m.timestamps == pytest.approx([i / 25 for i in expected])
    times = ", ".join(str(round(i / 25, 1)) for i in expected)
    assert m.frame_message == f"The video contains 8 frames sampled at {times} seconds. "
    assert m.kind == "video" and m.fps == 25 and m.duration == pytest.approx(2.0)


@pytest.mark.parametrize("num_frames,gop,bframes", [(8, 10, 0), (8, 250, 0), (32, 7, 0), (3, 50, 0),
                                                    (8, 10, 3), (32, 25, 3), (5, 250, 3)])
def test_each_sampled_frame_is_the_frame_at_its_index(tmp_path, num_frames, gop, bframes):
    # Frame n of the ramp is drawn with luma 16 + 4n, so a frame's colour names its index:
    # this catches seeking to the wrong keyframe or stopping a frame early or late. B-frames
    # put decode order apart from display order and exercise the dropping of non-reference frames.
    extra = ("-preset", "medium", "-bf", str(bframes), "-b_strategy", "0") if bframes else ()
    path = mf.video(tmp_path / "ramp.mp4", source="ramp", duration=2.0, gop=gop, extra=extra)
    m = load_media(path, LoadOptions(num_frames=num_frames, use_audio=False))
    assert m.frames_uint8.shape == (num_frames, 224, 224, 3)
    decoded = [mf.ramp_index(_mean_rgb(f).mean()) for f in m.frames_uint8]
    assert decoded == m.frame_indices == [int(i * 50 / num_frames) for i in range(num_frames)]


def test_frames_are_clip_normalised_and_colour_is_the_drawn_colour(tmp_path):
    path = mf.video(tmp_path / "red.mp4", source="color", color="red")
    m = load_media(path, LoadOptions(use_audio=False))
    assert isinstance(m, MediaInput)
    assert m.frames.shape == (8, 3, 224, 224) and m.frames.dtype == torch.float32
    assert np.abs(_mean_rgb(m.frames_uint8[0]) - [255, 0, 0]).max() < 12
    ref = (torch.from_numpy(m.frames_uint8).float().permute(0, 3, 1, 2) / 255
           - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    assert torch.allclose(m.frames, ref, atol=1e-5)


def test_sampling_by_fps(tmp_path):
    path = mf.video(tmp_path / "ramp.mp4", source="ramp", duration=2.0)
    m = load_media(path, LoadOptions(fps=2.0, use_audio=False))
    assert m.frame_indices == [0, 12, 25, 37]  # every 12.5 frames, cast to int
    assert [mf.ramp_index(_mean_rgb(f).mean()) for f in m.frames_uint8] == m.frame_indices
    capped = load_media(path, LoadOptions(fps=25.0, num_frames=5, use_audio=False))
    assert capped.frame_indices == [0, 1, 2, 3, 4]


def test_rotation_metadata_is_honoured_like_the_ffmpeg_cli(tmp_path):
    src = mf.halves(tmp_path / "lr.mp4", left="red", right="blue")  # 64x32, red on the left
    rot = mf.rotated(src, tmp_path / "rot.mp4", 90)
    reference = np.asarray(Image.open(mf.decode_png(rot, tmp_path / "ref.png")).convert("RGB"))
    assert reference.shape[:2] == (64, 32)  # the CLI shows it upright: taller than wide
    m = load_media(rot, LoadOptions(use_audio=False, resize="pad"))
    assert (m.width, m.height) == (32, 64)
    frame = m.frames_uint8[0]
    ours_top, ours_bottom = _mean_rgb(frame[40:100, 90:134]), _mean_rgb(frame[124:184, 90:134])
    ref_top, ref_bottom = _mean_rgb(reference[4:28]), _mean_rgb(reference[36:60])
    assert np.abs(ours_top - ref_top).max() < 25 and np.abs(ours_bottom - ref_bottom).max() < 25
    assert np.abs(ours_top - ours_bottom).max() > 200  # the two halves really differ
    # Upright 32x64 padded into 224x224: 112 px wide, pad columns on both sides.
    pad = np.round(np.array(CLIP_MEAN) * 255)
    assert np.abs(_mean_rgb(frame[:, :50]) - pad).max() < 2


def test_pad_and_crop_keep_the_aspect_ratio(tmp_path):
    path = mf.halves(tmp_path / "lr.mp4", left="red", right="blue")  # 64x32
    padded = load_media(path, LoadOptions(use_audio=False, resize="pad", num_frames=1))
    # 64x32 -> 224x112 centred: rows 0..55 and 168..223 are padding, 0 after normalisation.
    assert torch.allclose(padded.frames[0, :, :50], torch.zeros(3, 50, 224), atol=0.02)
    assert _mean_rgb(padded.frames_uint8[0, 60:160, :100])[0] > 200  # red on the left
    cropped = load_media(path, LoadOptions(use_audio=False, resize="crop", num_frames=1))
    # 64x32 -> 448x224, centre 224 columns: left half red, right half blue, no padding.
    left, right = _mean_rgb(cropped.frames_uint8[0, :, :100]), _mean_rgb(cropped.frames_uint8[0, :, 124:])
    assert left[0] > 200 and right[2] > 200
    squashed = load_media(path, LoadOptions(use_audio=False, num_frames=1))
    assert _mean_rgb(squashed.frames_uint8[0, :, :100])[0] > 200
    assert _mean_rgb(squashed.frames_uint8[0, :, 124:])[2] > 200


@pytest.mark.parametrize("suffix", ["png", "jpg", "webp", "bmp"])
def test_images_load_as_one_frame_with_their_colour(tmp_path, suffix):
    path = mf.image(tmp_path / f"green.{suffix}", color="green")
    m = load_media(path)
    assert m.kind == "image" and m.frames.shape == (1, 3, 224, 224)
    assert np.abs(_mean_rgb(m.frames_uint8[0]) - [0, 128, 0]).max() < 10
    assert m.audio is None and not m.has_audio and m.frame_message == ""
    assert (m.width, m.height) == (40, 30)


def test_image_resize_matches_pillow_bicubic(tmp_path):
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, size=(30, 50, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(tmp_path / "noise.png")
    m = load_media(tmp_path / "noise.png")
    ref = np.asarray(Image.fromarray(pixels).resize((224, 224), Image.Resampling.BICUBIC))
    assert np.array_equal(m.frames_uint8[0], ref)


def test_exif_orientation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 20), "red")
    img.paste(Image.new("RGB", (20, 20), "blue"), (20, 0))  # red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to display"
    img.save(tmp_path / "phone.jpg", exif=exif)
    m = load_media(tmp_path / "phone.jpg")
    top, bottom = _mean_rgb(m.frames_uint8[0, :90]), _mean_rgb(m.frames_uint8[0, 134:])
    assert top[0] > 200 and bottom[2] > 200  # red went to the top
    assert (m.width, m.height) == (40, 20)


def test_single_frame_gif_is_an_image_and_animated_gif_a_video(tmp_path):
    still = mf.image(tmp_path / "still.gif", color="blue")
    assert load_media(still).kind == "image"
    anim = mf.video(tmp_path / "anim.gif", source="ramp", duration=0.8, fps=10, vcodec="gif")
    m = load_media(anim)
    assert m.kind == "video" and m.frames.shape[0] == 8 and not m.has_audio


def test_decord_backend_samples_the_same_frames(tmp_path):
    path = mf.video(tmp_path / "ramp.mp4", source="ramp", duration=2.0, gop=10)
    ours = load_media(path, LoadOptions(use_audio=False))
    theirs = load_media(path, LoadOptions(use_audio=False, backend="decord"))
    assert theirs.frame_indices == ours.frame_indices
    assert theirs.frame_message == ours.frame_message
    assert np.array_equal(theirs.frames_uint8, ours.frames_uint8)  # same bytes: see test_media_fidelity


def test_frame_message_rounds_like_the_original():
    assert frame_message([0.0, 1.24, 2.56]) == "The video contains 3 frames sampled at 0.0, 1.2, 2.6 seconds. "


def test_options_are_validated():
    for bad in (LoadOptions(num_frames=0), LoadOptions(num_frames=33), LoadOptions(resize="fit"),
                LoadOptions(fps=0), LoadOptions(backend="opencv"), LoadOptions(timeout_s=0)):
        with pytest.raises(ValueError):
            load_media(__file__, bad)


def test_frame_threaded_decoding_gives_the_same_frames(tmp_path):
    extra = ("-preset", "medium", "-bf", "3", "-b_strategy", "0")
    path = mf.video(tmp_path / "ramp.mp4", source="ramp", duration=2.0, gop=12, extra=extra)
    threaded = load_media(path, LoadOptions(use_audio=False, num_frames=16, decode_threads=0))
    single = load_media(path, LoadOptions(use_audio=False, num_frames=16))  # default: one thread
    assert single.frame_indices == threaded.frame_indices == [int(i * 50 / 16) for i in range(16)]
    assert np.array_equal(single.frames_uint8, threaded.frames_uint8)
