"""Typed media errors. Each message says what is wrong with the file and what to do."""

from __future__ import annotations


class MediaError(ValueError):
    """A media file that cannot be turned into model input; the message says what to do."""


class UnsupportedMedia(MediaError):
    """Not a format, codec or kind of file we can read."""


class CorruptMedia(MediaError):
    """Empty, truncated or damaged file."""


class MediaTooLarge(MediaError):
    """Over a configured limit (bytes, duration or pixels)."""


class DecodeTimeout(MediaError):
    """Decoding took longer than the configured time limit."""

__all__ = ["CorruptMedia", "DecodeTimeout", "MediaError", "MediaTooLarge", "UnsupportedMedia"]
