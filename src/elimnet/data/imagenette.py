"""imagenette: 10 easy ImageNet classes (fastai), 9,469 train + 3,925 val images. Licence: Apache-2.0.

The archive (variant 160 px / 320 px / full, `data.variant`) is fetched once into
`data.root/imagenette/` and extracted beside it. Splits: the official train split is kept; the
official val split is cut, per class, into val and test in the ratio
`data.val_fraction : data.test_fraction` (so the test images are never ImageNet-train-like
duplicates of training images and the val/test benchmark stays comparable to fastai's).
"""
from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from elimnet.data.download import OFFLINE_HINT, download, extract_tar
from elimnet.data.official_splits import cap_per_split, carve
from elimnet.errors import DataError
from elimnet.io import remove_stale_temps
from elimnet.data.sources import Sample, SourceData, open_path, register_source
from elimnet.fields import Field, one_of

# URLs and md5s as pinned by torchvision.datasets.Imagenette (fastai publishes md5 only).
ARCHIVES = {
    "160": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412"),
    "320": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2-320.tgz", "3df6f0d01a2c9592104656642f5e78a3"),
    "full": ("https://s3.amazonaws.com/fast-ai-imageclas/imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612"),
}

WNID_NAMES = {
    "n01440764": "tench", "n02102040": "English springer", "n02979186": "cassette player",
    "n03000684": "chain saw", "n03028079": "church", "n03394916": "French horn",
    "n03417042": "garbage truck", "n03425413": "gas pump", "n03445777": "golf ball",
    "n03888257": "parachute",
}

IMAGE_EXTS = {".jpeg", ".jpg", ".png"}


def fetch_imagenette(root: str | Path, variant: str, progress: bool = True, deadline_s: float | None = None) -> Path:
    """Download and extract one variant; return its folder (holding train/ and val/).

    Extraction goes to a temp folder renamed into place, so an interrupted run re-extracts
    instead of reading half a tree.
    """
    url, md5 = ARCHIVES[variant]
    base = Path(root) / "imagenette"
    name = Path(url).name.removesuffix(".tgz")
    folder = base / name
    if (folder / "train").is_dir() and (folder / ".complete").exists():
        return folder
    archive = download(url, base / Path(url).name, md5=md5, progress=progress, offline_hint=OFFLINE_HINT,
                       deadline_s=deadline_s)
    remove_stale_temps(base, f".{name}.")  # extractions a killed run left behind
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=base))
    try:
        extract_tar(archive, tmp)
        inner = tmp / name
        if not (inner / "train").is_dir():
            raise DataError(f"{archive}: archive has no {name}/train folder; delete it to fetch again")
        (inner / ".complete").touch()
        if folder.exists():
            shutil.rmtree(folder)
        os.replace(inner, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def list_imagenette(folder: Path) -> tuple[list[str], list[Sample]]:
    wnids = sorted(d.name for d in (folder / "train").iterdir() if d.is_dir())
    if not wnids:
        raise DataError(f"{folder / 'train'}: no class folders")
    samples = []
    for split in ("train", "val"):
        for label, wnid in enumerate(wnids):
            d = folder / split / wnid
            if not d.is_dir():
                raise DataError(f"class {WNID_NAMES.get(wnid, wnid)!r} ({wnid}) has no {split} folder in {folder}")
            for f in sorted(d.iterdir()):
                if f.suffix.lower() in IMAGE_EXTS:
                    samples.append(Sample(open_path(f), label, f"{split}/{wnid}/{f.name}", split))
    return [WNID_NAMES.get(w, w) for w in wnids], samples


@register_source("imagenette", params={
    "data.variant": Field("160", lambda v: one_of(["160", "320", "full"])(str(v)),  # -S data.variant=320 is an int
                          "imagenette archive variant")})
def imagenette_source(cfg) -> SourceData:
    folder = fetch_imagenette(cfg["data.root"], str(cfg["data.variant"]), deadline_s=cfg["data.download_timeout_s"])
    classes, samples = list_imagenette(folder)
    val, test = cfg["data.val_fraction"], cfg["data.test_fraction"]
    carve(samples, "val", "test", share=test / (val + test), seed=cfg["data.split_seed"])
    samples = cap_per_split(samples, cfg["data.max_per_class"], cfg["data.split_seed"])
    return SourceData("imagenette", classes, samples, channels=3,
                      license="Apache-2.0 (fastai imagenette; images from ImageNet)",
                      stats={"variant": str(cfg["data.variant"])})
