"""Split a source deterministically and decode it once into uint8 tensors.

Output folder: train.pt / val.pt / test.pt ({"images", "labels"}) and meta.json.
"""
from __future__ import annotations

import json
import random
from collections import Counter
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from elimnet.data.sources import Sample, SourceData
from elimnet.data.tensors import TensorSplit

SPLITS = ("train", "val", "test")


from elimnet.errors import DataError  # noqa: E402,F401 - re-exported


def order_per_class(samples: list[Sample], seed: int) -> list[Sample]:
    """Samples grouped by class (in label order), each group in a seeded random order."""
    rng = random.Random(seed)
    by_class: dict[int, list[Sample]] = {}
    for s in samples:
        by_class.setdefault(s.label, []).append(s)
    ordered = []
    for label in sorted(by_class):
        group = sorted(by_class[label], key=lambda s: s.ref)
        rng.shuffle(group)
        ordered += group
    return ordered


def cap_per_class(samples: list[Sample], max_per_class: int | None, seed: int) -> list[Sample]:
    """The first `max_per_class` of each class in order_per_class's order (by name, not by readability)."""
    if not max_per_class:
        return samples
    taken: Counter = Counter()
    kept = []
    for s in order_per_class(samples, seed):
        if taken[s.label] < max_per_class:
            taken[s.label] += 1
            kept.append(s)
    return kept


def stratified_split(labels: list[int], val_fraction: float, test_fraction: float, seed: int,
                     classes: list[str] | None = None) -> list[str]:
    """Per class, shuffle with the seed and cut into train/val/test (at least one each)."""
    rng = np.random.default_rng(seed)
    assignment = [""] * len(labels)
    by_class: dict[int, list[int]] = {}
    for i, y in enumerate(labels):
        by_class.setdefault(y, []).append(i)
    names = classes or [str(c) for c in sorted(by_class)]
    for label in range(len(names)):
        idx = by_class.get(label, [])
        if len(idx) < 3:
            raise DataError(f"class {names[label]!r} has {len(idx)} images; each class needs at least 3 "
                            f"(one per split)")
        idx = np.array(idx)[rng.permutation(len(idx))]
        n_test = max(1, int(round(len(idx) * test_fraction)))
        n_val = max(1, int(round(len(idx) * val_fraction)))
        if n_test + n_val >= len(idx):
            raise DataError(f"class {names[label]!r} has {len(idx)} images: too few for val_fraction="
                            f"{val_fraction} and test_fraction={test_fraction}")
        for j, i in enumerate(idx):
            assignment[i] = "test" if j < n_test else "val" if j < n_test + n_val else "train"
    return assignment


HIGH_DEPTH_MODES = {"I", "F", "I;16", "I;16L", "I;16B", "I;16N"}


def to_8bit(img: Image.Image) -> Image.Image:
    """An "L" or "RGB" image with the same content, or a DataError saying why it has none.

    - 16-bit, 32-bit integer and float images are scaled by their own min..max to 0..255: Pillow's
      convert("L") clips them instead (a 16-bit PNG came out 99% white, a float TIFF all black).
      NaN/inf pixels are ignored for the range and become 0; an image without finite pixels or
      with a single value (no range to scale) is rejected.
    - Palette, CMYK, YCbCr, 1-bit and the like convert to RGB/L; transparency is composited over
      white, so transparent pixels do not show whatever colour they happen to store.
    """
    if img.mode in HIGH_DEPTH_MODES:
        a = np.asarray(img, dtype=np.float64)
        finite = np.isfinite(a)
        if not finite.any():
            raise DataError(f"{img.mode} image without finite pixel values")
        lo, hi = float(a[finite].min()), float(a[finite].max())
        if hi == lo:
            raise DataError(f"{img.mode} image with a single value ({lo:g}): no range to scale to 8 bits")
        a = np.where(finite, (a - lo) * (255.0 / (hi - lo)), 0.0)
        return Image.fromarray(np.rint(a).astype(np.uint8), mode="L")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (img.mode == "RGB" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L" if img.mode in ("LA", "La") else "RGB")
    if img.mode in ("L", "RGB"):
        return img
    return img.convert("L" if img.mode == "1" else "RGB")  # CMYK, YCbCr, LAB, HSV, 1-bit


def to_square_array(img: Image.Image, size: int, channels: int) -> np.ndarray:
    img = to_8bit(img).convert("L" if channels == 1 else "RGB")
    w, h = img.size
    scale = size / min(w, h)  # shorter side to `size`, then centre crop
    img = img.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BILINEAR)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    arr = np.asarray(img.crop((left, top, left + size, top + size)), dtype=np.uint8)
    return arr[None] if channels == 1 else arr.transpose(2, 0, 1)


def skip_reason(e: Exception) -> str:
    """One short line: why a file was skipped."""
    text = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
    return text if isinstance(e, DataError) else f"{type(e).__name__}: {text}" if text else type(e).__name__


def decode(samples: list[Sample], size: int, channels: int, desc: str, cap: int | None = None
           ) -> tuple[list[np.ndarray], list[int], dict[str, str]]:
    """(arrays, indices into `samples` that decoded, {ref: reason} of those that did not).
    With `cap`, a class stops once `cap` of its images decoded: unreadable files take no slot."""
    images, kept, bad = [], [], {}
    readable: Counter = Counter()
    for i, s in enumerate(tqdm(samples, desc=desc, unit="img", leave=False, mininterval=1.0)):
        if cap and readable[s.label] >= cap:
            continue
        try:
            images.append(to_square_array(s.open(), size, channels))
            kept.append(i)
            readable[s.label] += 1
        except Exception as e:  # corrupt, truncated, not an image: skip and count, never crash mid-way
            bad[s.ref] = skip_reason(e)
    return images, kept, bad


def _stack(images: list[np.ndarray], size: int, channels: int) -> torch.Tensor:
    return torch.from_numpy(np.stack(images)) if images else torch.zeros(0, channels, size, size, dtype=torch.uint8)


def fold_assignments(labels: list[int], folds: int, val_fraction: float, split_seed: int,
                     classes: list[str]) -> list[list[str]]:
    """K-fold cross-validation: one train/val/test assignment per fold. Fold f's test split is stratified fold f
    of all images; its val split a stratified `val_fraction` share of the others; the rest trains."""
    from sklearn.model_selection import StratifiedKFold, train_test_split

    y = np.asarray(labels, dtype=np.int64)
    counts = np.bincount(y, minlength=len(classes))
    for name, n in zip(classes, counts):
        if n < folds + 2:  # one test image per fold, and train and val in every fold
            raise DataError(f"class {name!r} has {n} images; data.folds={folds} needs at least {folds + 2} per "
                            f"class (lower data.folds or use data.folds: 0)")
    out = []
    splitter = StratifiedKFold(folds, shuffle=True, random_state=split_seed)
    for rest, test in splitter.split(np.zeros(len(y)), y):
        try:
            train, val = train_test_split(rest, test_size=val_fraction, stratify=y[rest], random_state=split_seed)
        except ValueError as e:  # too few images of a class for a stratified val share
            raise DataError(f"data.val_fraction={val_fraction}: no stratified val split with data.folds={folds} "
                            f"({e})") from None
        assignment = np.full(len(y), "train", dtype=object)
        assignment[val], assignment[test] = "val", "test"
        out.append(assignment.tolist())
    return out


def _write_splits(out_dir: Path, assignment: list[str], images: list[np.ndarray], labels: list[int],
                  source: SourceData, image_size: int) -> dict:
    """{split: {size, class_counts}} after writing out_dir/{train,val,test}.pt in `assignment`'s order."""
    splits = {}
    for split in SPLITS:
        idx = [i for i, a in enumerate(assignment) if a == split]
        x = _stack([images[i] for i in idx], image_size, source.channels)
        y = torch.tensor([labels[i] for i in idx], dtype=torch.int64)
        counts = Counter(y.tolist())
        for i, name in enumerate(source.classes):
            if counts.get(i, 0) == 0:
                raise DataError(f"class {name!r} has no usable images in the {split} split")
        torch.save({"images": x, "labels": y}, split_path(out_dir, split))
        splits[split] = {"size": len(y), "class_counts": {n: counts.get(i, 0) for i, n in enumerate(source.classes)}}
    return splits


def _write_folds(out_dir: Path, assignments: list[list[str]], images, labels, source: SourceData,
                 image_size: int, metrics: dict) -> list[dict]:
    """Fold 0 in out_dir, fold f >= 1 in out_dir/fold<f> (repeat_data_dir), each with its meta.json; every
    meta.json lists its test images' global ids (positions in the pre-split order) so folds can be pooled."""
    per_fold = []
    for f, assignment in enumerate(assignments):
        d = out_dir if f == 0 else out_dir / f"fold{f}"
        d.mkdir(exist_ok=True)
        per_fold.append(_write_splits(d, assignment, images, labels, source, image_size))
    for f, assignment in enumerate(assignments):
        test_ids = [i for i, a in enumerate(assignment) if a == "test"]
        meta = {**metrics, "splits": per_fold[f], "fold": f, "folds": per_fold, "test_ids": test_ids}
        (repeat_data_dir(out_dir, f) / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return per_fold


def prepare(source: SourceData, out_dir: Path, *, image_size: int, val_fraction: float, test_fraction: float,
            split_seed: int, max_per_class: int | None = None, folds: int = 0) -> dict:
    """Write the split tensors into out_dir (which the caller swaps in atomically); return data metrics.
    `split_seed` draws the split, the folds and the per-class cap; folds >= 3: K-fold layout (_write_folds)."""
    samples = order_per_class(source.samples, split_seed) if max_per_class else source.samples
    if not samples:
        raise DataError(f"data source {source.name!r} has no images")
    official = all(s.split for s in samples) and not folds
    # Decoded before the split (and the per-class cap): a file that cannot be read is dropped first and
    # takes no split's slot, nor a place under data.max_per_class.
    images, kept, bad = decode(samples, image_size, source.channels, "decode", cap=max_per_class)
    bad_samples = [s for s in samples if s.ref in bad]
    samples = [samples[i] for i in kept]
    labels = [s.label for s in samples]
    metrics = {"source": source.name, "classes": source.classes, "image_size": image_size,
               "channels": source.channels, "license": source.license, "splits": {}, "skipped": {}}
    # Skips per official split; a stratified split happens after them, so they belong to none.
    keys = SPLITS if official else ("before_split",)
    skipped = {k: sum(1 for s in bad_samples if (s.split if official else "before_split") == k) for k in keys}
    extra = {"skipped_total": len(bad), **source.stats}
    if bad:
        extra = {"skipped_files": list(bad)[:50], "skipped_reasons": dict(list(bad.items())[:50]), **extra}
    if folds:
        metrics.update(skipped=skipped, **extra)
        per_fold = _write_folds(out_dir, fold_assignments(labels, folds, val_fraction, split_seed, source.classes),
                                images, labels, source, image_size, metrics)
        return {**metrics, "splits": per_fold[0], "folds": per_fold}
    if official:  # keep the official split
        assignment = [s.split for s in samples]
    else:
        assignment = stratified_split(labels, val_fraction, test_fraction, split_seed, source.classes)
    metrics["splits"] = _write_splits(out_dir, assignment, images, labels, source, image_size)
    metrics.update(skipped=skipped, **extra)
    (out_dir / "meta.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def repeat_data_dir(data_dir: str | Path, repeat: int) -> Path:
    """The prepared folder repeat `repeat` trains and tests on: data_dir/fold<r> under data.folds (fold 0 is
    data_dir itself, which compress reads), else data_dir (every repeat shares the one split)."""
    fold = Path(data_dir) / f"fold{repeat}"
    return fold if repeat > 0 and fold.is_dir() else Path(data_dir)


def split_path(data_dir: str | Path, split: str) -> Path:
    """Where a prepared split lives: the one place that knows the layout of data/prepared."""
    return Path(data_dir) / f"{split}.pt"


def load_prepared(data_dir: str | Path, splits: tuple[str, ...] = SPLITS) -> dict[str, TensorSplit]:
    """{split: TensorSplit} from a prepared folder; a missing split is a one-line DataError."""
    out = {}
    for split in splits:
        path = split_path(data_dir, split)
        if not path.exists():
            raise DataError(f"{path}: prepared data is missing (run: dvc repro prepare)")
        out[split] = TensorSplit.load(path)
    return out


def default_num_classes(data_dir: str | Path = "data/prepared") -> int:
    """The prepared data's class count when there is prepared data, else ImageNet's 1000."""
    meta = Path(data_dir) / "meta.json"
    return len(json.loads(meta.read_text())["classes"]) if meta.exists() else 1000


def load_meta(data_dir: str | Path) -> dict:
    path = Path(data_dir) / "meta.json"
    if not path.exists():
        raise DataError(f"{path}: prepared data is missing (run: dvc repro prepare)")
    return json.loads(path.read_text())
