"""Still images with Pillow: EXIF orientation applied, resized as the original (bicubic).

An animated GIF or WebP is treated as a video by ``model/media.py``; here, as for any
image, only its first frame is used.
"""

from __future__ import annotations

import os
import struct
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from model.media.common import LoadOptions, place, scaled_size
from model.media.errors import CorruptMedia, MediaTooLarge


def probe_image(path: str) -> tuple[str, int, int, int] | None:
    """(format, width, height, frame count) if Pillow recognises the file, else None.

    An image over Pillow's own size guard (about 179 M pixels: ``DecompressionBombError``) is
    still an image: its size is read from its header, so the loader refuses it by its pixel
    limit, saying so, instead of handing it to the video path.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                return img.format or "", img.width, img.height, int(getattr(img, "n_frames", 1))
    except Image.DecompressionBombError:
        return _probe_huge_image(path)
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _probe_huge_image(path: str) -> tuple[str, int, int, int] | None:
    """(format, width, height, 1) of an image ``Image.open`` refuses for its size: the same
    format plugins read the header (``Image.OPEN``, what ``Image.open`` tries), without the
    size guard that follows. Nothing is decoded."""
    Image.init()
    with open(path, "rb") as fp:
        prefix = fp.read(16)
        for fmt in Image.ID:
            factory, accept = Image.OPEN[fmt]
            if accept is not None and accept(prefix) is not True:
                continue
            fp.seek(0)
            try:
                img = factory(fp, path)
            except Image.DecompressionBombError as err:
                # Some plugins (GIF) run the size guard inside their own header read, so the
                # size never reaches us; Pillow's message carries the pixel count.
                raise MediaTooLarge(f"{os.path.basename(path)} reads as a {fmt} image too large to open ({err}); "
                                    "scale it down, or check that the file is what its name says") from None
            except (SyntaxError, OSError, ValueError, IndexError, TypeError, struct.error):
                continue
            return fmt, img.width, img.height, 1
    return None


def load_image(path: str, options: LoadOptions) -> np.ndarray:
    """Decode an image into a (1, S, S, 3) uint8 array."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(path) as img:
                if img.width * img.height > options.max_pixels:
                    raise MediaTooLarge(
                        f"the image is {img.width}x{img.height}, more than the {options.max_pixels:,} pixel "
                        "limit; scale it down or raise LoadOptions.max_pixels")
                img.seek(0)
                img = ImageOps.exif_transpose(img)  # phones store rotation as an EXIF tag
                rgb = img.convert("RGB")  # as the original; alpha is dropped
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, MediaTooLarge):
            raise
        raise CorruptMedia(f"the image cannot be decoded ({err}); it may be truncated or damaged: "
                           "re-save it as PNG or JPEG") from err
    size = options.image_size
    sw, sh = scaled_size(rgb.width, rgb.height, size, options.resize)
    scaled = np.array(rgb.resize((sw, sh), Image.Resampling.BICUBIC))  # writable copy
    return place(scaled, size, options.resize)[None]  # (1, S, S, 3)
