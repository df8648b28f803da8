"""folder: the user's own images in ImageFolder layout, `data.path/<class>/<image>` (subfolders
inside a class folder are searched too). Classes are the subfolder names, sorted; the split is
stratified by `prepare`. Files without an image extension are not read and are counted as
`non_image_files`; image files that fail to decode are skipped and counted by `prepare`.
"""
from __future__ import annotations

from pathlib import Path

from elimnet.data.prepare import DataError
from elimnet.data.sources import Sample, SourceData, open_path, register_source
from elimnet.errors import ConfigError
from elimnet.fields import Field, is_str

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


def _visible(p: Path | str) -> bool:
    return not Path(p).name.startswith(".")  # .DS_Store, .ipynb_checkpoints, .git


def list_folder(root: str | Path) -> tuple[list[str], list[Sample], int]:
    """(classes, samples, number of non-image files) for an ImageFolder-layout directory."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"data.path={root}: must be an existing directory in ImageFolder layout "
                        f"(<path>/<class>/<image>)")
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and _visible(d))
    if not classes:
        raise DataError(f"data.path={root}: has no class subfolders; expected ImageFolder layout "
                        f"{root}/<class>/<image>")
    samples, other = [], 0
    for label, name in enumerate(classes):
        found = 0
        for f in sorted((root / name).rglob("*")):
            if not f.is_file() or not all(_visible(p) for p in f.relative_to(root).parts):
                continue
            if f.suffix.lower() in IMAGE_EXTS:
                samples.append(Sample(open_path(f), label, str(f.relative_to(root)), None))
                found += 1
            else:
                other += 1
        if not found:
            raise DataError(f"class {name!r} has no image files in {root / name}")
    return classes, samples, other


def _check_path(values: dict) -> None:
    if values["data.name"] == "folder" and not values["data.path"]:
        raise ConfigError("data.path=null: must name an ImageFolder directory when data.name=folder")


@register_source("folder", check=_check_path, params={
    "data.path": Field(None, is_str(optional=True), "folder source: ImageFolder-layout directory")})
def folder_source(cfg) -> SourceData:
    classes, samples, other = list_folder(cfg["data.path"])
    return SourceData("folder", classes, samples, channels=3, license="(user data)",
                      stats={"path": str(cfg["data.path"]), "non_image_files": other})
