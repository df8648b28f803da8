"""Data-source registry: each source lists labelled samples; `prepare` decodes them once.

A source is one module of elimnet.data that decorates its loader with `register_source(name,
params=..., check=...)`: its own params section (data.<name>.* or a key only it reads) and its
cross-checks land in elimnet.extensions, where config.py finds them; the package imports all its
modules, so nothing lists sources. A source returns a `SourceData`: class names, and samples that
know how to open their image (lazily, so a corrupt file is found, skipped and counted at decode time).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from PIL import Image, ImageOps

from elimnet import extensions
from elimnet.errors import ConfigError
from elimnet.fields import Field


@dataclass
class Sample:
    open: Callable[[], Image.Image]  # returns a PIL image; may raise on corrupt data
    label: int
    ref: str  # a human-readable reference (path, URL) for error messages and counts
    split: str | None = None  # an official split ("train"/"val"/"test") when the source has one


@dataclass
class SourceData:
    name: str
    classes: list[str]
    samples: list[Sample]
    channels: int = 3  # 1 = grayscale (expanded to 3 channels at batch time)
    license: str = ""
    stats: dict = field(default_factory=dict)  # e.g. dropped objects, per-source counts


def open_path(path: str | Path) -> Callable[[], Image.Image]:
    """A loader that decodes the file fully (truncated files fail here) and turns it upright by its
    EXIF orientation (phones store portrait photos as rotated landscape pixels plus a tag)."""
    def _open() -> Image.Image:
        with Image.open(path) as im:
            im.load()
            return ImageOps.exif_transpose(im)  # a copy, also when there is no tag
    return _open


_SOURCES: dict[str, Callable] = {}


def register_source(name: str, params: dict[str, Field] | None = None,
                    check: Callable[[dict], None] | None = None):
    """Decorator: `fn(cfg) -> SourceData` is the source `name` (data.name=<name>); `check(values)` cross-checks
    the flat values and should check only when data.name is this source."""
    def deco(fn: Callable):
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} registered twice")
        extensions.declare("source", name, params, check)
        _SOURCES[name] = fn
        return fn
    return deco


def unregister_source(name: str) -> None:
    """Forget a source and its params (tests that register a toy one clean up with it)."""
    _SOURCES.pop(name, None)
    extensions.withdraw("source", name)


def list_sources() -> list[str]:
    return sorted(_SOURCES)


def load_source(cfg) -> SourceData:
    name = cfg["data.name"]
    if name not in _SOURCES:
        raise ConfigError(f"data.name={name}: must be one of {', '.join(list_sources())}")
    return _SOURCES[name](cfg)
