"""taco: object crops from TACO (Trash Annotations in Context, Proença & Simões 2020), 6 classes.

1. `annotations.json` (COCO format, official 1,500-image release) from the TACO repository, URL
   pinned at a commit, master as the fallback mirror.
2. Every annotated object whose category is in `data.taco.mapping` (TACO category or
   supercategory name -> class) and whose box is at least `data.taco.min_size` px on its short
   side is kept; the others are dropped and counted. Classes are the mapping's values, sorted.
3. Only the images holding a kept object are fetched, `data.taco.workers` at a time, from the
   Flickr URLs inside the annotations (`data.taco.images`: original or the 640 px copies), into
   `data.root/taco/`; a dead link costs its objects (counted), not the run.
4. Each object becomes one sample: its box grown by `data.taco.padding` x its side on every side,
   clipped to the image, cropped when `prepare` decodes it. The split is stratified by `prepare`.

The annotations' sha256 is not published upstream: it is recorded beside the file on first download
(trust on first use) and verified on every later run; pin it for all users in ANNOTATIONS_SHA256.
"""
from __future__ import annotations

import difflib
import json
import sys
from collections import Counter
from functools import lru_cache, partial
from pathlib import Path

from PIL import Image, ImageOps

from elimnet.errors import ConfigError
from elimnet.data.download import (OFFLINE_HINT, DownloadError, download_first, download_many, refuse_escapes,
                                   sha256_file)
from elimnet.data.prepare import DataError
from elimnet.data.sources import Sample, SourceData, register_source
from elimnet.fields import Field, int_range, num_range, one_of, str_map

ANNOTATIONS_COMMIT = "508da019a19be9ebcdacf164e2152444e57cd12c"
ANNOTATIONS_URLS = [
    f"https://raw.githubusercontent.com/pedropro/TACO/{ANNOTATIONS_COMMIT}/data/annotations.json",
    "https://raw.githubusercontent.com/pedropro/TACO/master/data/annotations.json",
]
ANNOTATIONS_SHA256: str | None = None  # upstream publishes none; see the module doc

# TACO's 60 categories -> the ELimNet seeds' 6 classes (Korean recycling bins: "Paperpack" is liquid
# cartons and paper cups, "Paper" is paper and cardboard). Glass, batteries, food, cigarettes,
# textiles, mixed blister packs and unlabeled litter have no class and are dropped.
DEFAULT_MAPPING = {
    "Aluminium foil": "Metal", "Food Can": "Metal", "Aerosol": "Metal", "Drink can": "Metal",
    "Metal bottle cap": "Metal", "Metal lid": "Metal", "Pop tab": "Metal", "Scrap metal": "Metal",
    "Magazine paper": "Paper", "Wrapping paper": "Paper", "Normal paper": "Paper", "Paper bag": "Paper",
    "Corrugated carton": "Paper", "Pizza box": "Paper", "Egg carton": "Paper", "Toilet tube": "Paper",
    "Other carton": "Paper", "Paper straw": "Paper",
    "Drink carton": "Paperpack", "Meal carton": "Paperpack", "Paper cup": "Paperpack",
    "Plastified paper bag": "Paperpack",
    "Clear plastic bottle": "Plastic", "Other plastic bottle": "Plastic", "Plastic bottle cap": "Plastic",
    "Disposable plastic cup": "Plastic", "Other plastic cup": "Plastic", "Plastic lid": "Plastic",
    "Other plastic": "Plastic", "Spread tub": "Plastic", "Tupperware": "Plastic",
    "Disposable food container": "Plastic", "Other plastic container": "Plastic",
    "Plastic utensils": "Plastic", "Plastic straw": "Plastic", "Squeezable tube": "Plastic",
    "Six pack rings": "Plastic",
    "Plastic film": "Plasticbag", "Garbage bag": "Plasticbag", "Other plastic wrapper": "Plasticbag",
    "Single-use carrier bag": "Plasticbag", "Polypropylene bag": "Plasticbag", "Crisp packet": "Plasticbag",
    "Foam cup": "Styrofoam", "Foam food container": "Styrofoam", "Styrofoam piece": "Styrofoam",
}

IMAGE_URL_KEY = {"original": "flickr_url", "640": "flickr_640_url"}


def fetch_annotations(root: str | Path, progress: bool = True, deadline_s: float | None = None) -> dict:
    dest = Path(root) / "taco" / "annotations.json"
    pin = dest.with_name(dest.name + ".sha256")
    expected = ANNOTATIONS_SHA256 or (pin.read_text().strip() if pin.exists() else None)
    download_first(ANNOTATIONS_URLS, dest, sha256=expected, progress=progress, offline_hint=OFFLINE_HINT,
                   deadline_s=deadline_s)
    if not pin.exists():
        pin.write_text(sha256_file(dest) + "\n")
    try:
        coco = json.loads(dest.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        dest.unlink()
        pin.unlink(missing_ok=True)
        raise DataError(f"{dest}: not valid JSON ({e}); deleted, run again to fetch it anew") from e
    missing = [k for k in ("images", "annotations", "categories") if k not in coco]
    if missing:
        raise DataError(f"{dest}: not a COCO annotations file (no {', '.join(missing)})")
    return coco


def resolve_mapping(coco: dict, mapping: dict[str, str]) -> dict[int, str]:
    """category id -> class, for a mapping keyed by category name or supercategory name."""
    by_name = {c["name"]: c for c in coco["categories"]}
    supers = {c.get("supercategory") for c in coco["categories"]}
    for key in mapping:
        if key not in by_name and key not in supers:
            close = difflib.get_close_matches(key, list(by_name) + sorted(s for s in supers if s), n=3)
            hint = f"; did you mean {', '.join(close)}?" if close else ""
            raise ConfigError(f"data.taco.mapping: {key}: not a TACO category or supercategory{hint}")
    out = {}
    for c in coco["categories"]:
        cls = mapping.get(c["name"], mapping.get(c.get("supercategory")))  # a category beats its super
        if cls is not None:
            out[c["id"]] = cls
    return out


def plan_crops(coco: dict, mapping: dict[str, str], padding: float, min_size: int):
    """(classes, {image_id: image}, [(image_id, ann_id, label, normalised box)], counts)."""
    cat_class = resolve_mapping(coco, mapping)
    classes = sorted(set(mapping.values()))
    label_of = {c: i for i, c in enumerate(classes)}
    images = {im["id"]: im for im in coco["images"]}
    crops, counts = [], Counter()
    for ann in sorted(coco["annotations"], key=lambda a: (images[a["image_id"]]["file_name"], a["id"])):
        counts["objects"] += 1
        cls = cat_class.get(ann["category_id"])
        if cls is None:
            counts["dropped_unmapped"] += 1
            continue
        x, y, w, h = ann["bbox"]
        if min(w, h) < min_size:
            counts["dropped_small"] += 1
            continue
        im = images[ann["image_id"]]
        W, H = im["width"], im["height"]
        box = (max(0.0, x - padding * w) / W, max(0.0, y - padding * h) / H,
               min(W, x + w + padding * w) / W, min(H, y + h + padding * h) / H)
        crops.append((im["id"], ann["id"], label_of[cls], box))
    needed = {c[0]: images[c[0]] for c in crops}
    return classes, needed, crops, counts


@lru_cache(maxsize=2)  # samples come grouped by image, so each photo is decoded about once per split
def _load_upright(path: str, ann_w: int, ann_h: int) -> Image.Image:
    with Image.open(path) as im:
        im.load()
        upright = ImageOps.exif_transpose(im)
        # Boxes are in the frame the annotators saw; prefer the EXIF-upright one unless only the raw fits.
        if (upright.width >= upright.height) != (ann_w >= ann_h) and (im.width >= im.height) == (ann_w >= ann_h):
            upright = im
        return upright.convert("RGB")


def _open_crop(path: str, ann_w: int, ann_h: int, box: tuple[float, float, float, float]) -> Image.Image:
    im = _load_upright(path, ann_w, ann_h)
    W, H = im.size
    x0, y0, x1, y1 = box
    return im.crop((round(x0 * W), round(y0 * H), max(round(x1 * W), round(x0 * W) + 1),
                    max(round(y1 * H), round(y0 * H) + 1)))


def taco_samples(coco: dict, root: str | Path, *, mapping: dict[str, str], padding: float, min_size: int,
                 images: str = "original", workers: int = 8, progress: bool = True,
                 deadline_s: float | None = None) -> SourceData:
    classes, needed, crops, counts = plan_crops(coco, mapping, padding, min_size)
    folder = Path(root) / "taco" / ("images" if images == "original" else f"images_{images}")
    # file_name comes from a downloaded JSON: "../../x" or "/abs/x" must not write outside the folder.
    refuse_escapes(folder, [str(im.get("file_name", "")) for im in coco["images"]],
                   f"{Path(root) / 'taco' / 'annotations.json'} (file_name)")
    key = IMAGE_URL_KEY[images]
    jobs = {im[key]: (iid, folder / im["file_name"]) for iid, im in needed.items() if im.get(key)}
    lost = {iid for iid, im in needed.items() if not im.get(key)}  # no URL of that size listed
    _, failed = download_many([(url, dest) for url, (_, dest) in jobs.items()], workers=workers,
                              desc="TACO images", progress=progress, retries=3, deadline_s=deadline_s)
    if jobs and len(failed) == len(jobs):
        first = next(iter(failed.values()))
        raise DownloadError(f"none of the {len(jobs)} TACO images could be downloaded; first: {first}. "
                            f"{OFFLINE_HINT}")
    lost |= {jobs[url][0] for url in failed}
    samples = []
    for iid, ann_id, label, box in crops:
        if iid in lost:
            counts["dropped_image_failed"] += 1
            continue
        im = needed[iid]
        path = str(folder / im["file_name"])
        samples.append(Sample(partial(_open_crop, path, im["width"], im["height"], box), label,
                              f"{im['file_name']}#ann{ann_id}", None))
    if lost:
        print(f"warning: {len(lost)} TACO images could not be fetched; their {counts['dropped_image_failed']} "
              f"objects are dropped (counted in metrics/data.json)", file=sys.stderr)
    per_class = Counter(s.label for s in samples)
    stats = {"objects": counts["objects"], "kept": len(samples),
             "dropped_unmapped": counts["dropped_unmapped"], "dropped_small": counts["dropped_small"],
             "dropped_image_failed": counts["dropped_image_failed"], "images_failed": len(lost),
             "per_class": {c: per_class.get(i, 0) for i, c in enumerate(classes)}}
    return SourceData("taco", classes, samples, channels=3, license="CC BY 4.0 (TACO, Proença & Simões)",
                      stats={"taco": stats})


@register_source("taco", params={
    "data.taco.padding": Field(0.1, num_range(0.0, 1.0), "TACO crop padding, fraction of box side"),
    "data.taco.min_size": Field(32, int_range(1), "TACO: smallest box side (px) kept"),
    "data.taco.workers": Field(8, int_range(1, 64), "TACO parallel image downloads"),
    "data.taco.mapping": Field({}, str_map, "TACO category name -> class name; others dropped"),
    "data.taco.images": Field("original", one_of(["original", "640"]),
                              "TACO photos fetched: original size or Flickr's 640 px copies (fast)"),
})
def taco_source(cfg) -> SourceData:
    coco = fetch_annotations(cfg["data.root"], deadline_s=cfg["data.download_timeout_s"])
    return taco_samples(coco, cfg["data.root"], mapping=cfg["data.taco.mapping"] or DEFAULT_MAPPING,
                        padding=cfg["data.taco.padding"], min_size=cfg["data.taco.min_size"],
                        images=cfg["data.taco.images"], workers=cfg["data.taco.workers"],
                        deadline_s=cfg["data.download_timeout_s"])
