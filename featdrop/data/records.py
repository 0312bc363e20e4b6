"""Every overlay's record, by name: the one list that config validation, the figures and the suppression
report read. A new overlay adds its record to ``RECORDS`` beside its compositing code; nothing here
changes."""
from __future__ import annotations

from ..errors import ConfigError
from . import audio, overlays
from .base import Overlay

OVERLAYS: dict[str, Overlay] = {r.name: r for r in (*overlays.RECORDS, *audio.RECORDS)}
IMAGE_OVERLAYS = tuple(n for n, r in OVERLAYS.items() if r.modality == "image")
AUDIO_OVERLAYS = tuple(n for n, r in OVERLAYS.items() if r.modality == "audio")


def get(name: str) -> Overlay:
    """The record of overlay ``name``; ConfigError naming the allowed ones otherwise."""
    if name not in OVERLAYS:
        raise ConfigError(f"overlay = {name!r} is invalid: allowed one of {', '.join(OVERLAYS)}")
    return OVERLAYS[name]
