"""Media loading: a file in, frames and fbank clips out.

``load_media(path, LoadOptions())`` is the one entry point (``loader.py``). The decoders
live beside it, one per kind of input: ``video.py`` (frames), ``audio.py`` (sound track to
fbank clips), ``image.py`` (still images); ``common.py`` holds the options and the resizing
they share, ``errors.py`` the typed errors. To add a media source, add a decoder here and
route to it from ``loader.py``.
"""

from model.media.common import MAX_FRAMES, LoadOptions
from model.media.errors import CorruptMedia, DecodeTimeout, MediaError, MediaTooLarge, UnsupportedMedia
from model.media.loader import NO_SOUND_NOTE, MediaInput, check_path, content_sha256, frame_message, load_media

__all__ = [
    "MAX_FRAMES", "NO_SOUND_NOTE", "CorruptMedia", "DecodeTimeout", "LoadOptions", "MediaError", "MediaInput",
    "MediaTooLarge", "UnsupportedMedia", "check_path", "content_sha256", "frame_message", "load_media",
]
