"""fashion_mnist: 70,000 28x28 grayscale photos of 10 clothing types (Zalando). Licence: MIT.

Files: Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) when installed,
otherwise the four idx files are fetched into `data.root/fashion_mnist/` from the mirror and
md5s that torchvision pins (Debian re-gzipped them, so only downloads are md5-checked; every file
is checked for its idx header and image count). `prepare` upscales the 28x28 images to
`data.image_size`. Splits: the official 10,000-image test set is kept as test; val is a
stratified `data.val_fraction` of the official train set.
"""
from __future__ import annotations

import gzip
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from elimnet.data.download import OFFLINE_HINT, download_first
from elimnet.data.official_splits import cap_per_split, carve
from elimnet.data.prepare import DataError
from elimnet.data.sources import Sample, SourceData, register_source

DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
MIRRORS = ["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"]
FILES = {  # name: md5 (torchvision.datasets.FashionMNIST.resources)
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}
CLASSES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot"]


def fashion_mnist_files(root: str | Path, debian_dir: Path | None = None, progress: bool = True,
                        deadline_s: float | None = None) -> Path:
    """The folder holding the four .gz files: Debian's when complete, else a downloaded copy."""
    debian_dir = DEBIAN_DIR if debian_dir is None else debian_dir
    if all((debian_dir / f).is_file() for f in FILES):
        return debian_dir
    dest = Path(root) / "fashion_mnist"
    for name, md5 in FILES.items():
        download_first([m + name for m in MIRRORS], dest / name, md5=md5, progress=progress, deadline_s=deadline_s,
                       offline_hint=OFFLINE_HINT + " Or: apt-get install dataset-fashion-mnist.")
    return dest


def read_idx(path: Path, magic: int) -> np.ndarray:
    """An idx file (big-endian header: magic, dims) as a uint8 array."""
    with gzip.open(path, "rb") as f:
        data = f.read()
    ndim = magic & 0xFF
    header = np.frombuffer(data, dtype=">i4", count=1 + ndim)
    if int(header[0]) != magic:
        raise DataError(f"{path}: not an idx file (magic {int(header[0])}, expected {magic})")
    shape = tuple(int(d) for d in header[1:])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 * (1 + ndim))
    if body.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated ({body.size} bytes of {int(np.prod(shape))})")
    return body.reshape(shape)


def _from_array(images: np.ndarray, i: int) -> Image.Image:
    return Image.fromarray(images[i], mode="L")


def list_fashion_mnist(folder: Path) -> list[Sample]:
    samples = []
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = read_idx(folder / f"{prefix}-images-idx3-ubyte.gz", 2051)
        labels = read_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", 2049)
        if len(images) != len(labels):
            raise DataError(f"{folder}: {prefix} has {len(images)} images but {len(labels)} labels")
        samples += [Sample(partial(_from_array, images, i), int(y), f"{prefix}#{i:05d}", split)
                    for i, y in enumerate(labels)]
    return samples


@register_source("fashion_mnist")
def fashion_mnist_source(cfg) -> SourceData:
    folder = fashion_mnist_files(cfg["data.root"], deadline_s=cfg["data.download_timeout_s"])
    samples = list_fashion_mnist(folder)
    carve(samples, "train", "val", share=cfg["data.val_fraction"], seed=cfg["data.split_seed"])
    samples = cap_per_split(samples, cfg["data.max_per_class"], cfg["data.split_seed"])
    return SourceData("fashion_mnist", list(CLASSES), samples, channels=1,
                      license="MIT (Zalando Research, Fashion-MNIST)", stats={"files": str(folder)})
