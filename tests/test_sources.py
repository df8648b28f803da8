"""Data sources through their real code paths: downloads from a loopback server, extraction, crops,
bad files skipped and counted, stratified and repeatable splits."""
from __future__ import annotations

import os
import gzip
import hashlib
import io
import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import elimnet.data.download as download_mod
from elimnet.config import ConfigError, defaults
from elimnet.data import fashion_mnist, imagenette, load_source, taco
from elimnet.data.download import ChecksumError, DownloadError
from elimnet.data.folder import list_folder
from elimnet.data.official_splits import cap_per_split, carve
from elimnet.data.prepare import DataError, prepare
from elimnet.data.sources import Sample

WNIDS = ["n01440764", "n02102040"]  # tench, English springer


@pytest.fixture(autouse=True)
def no_backoff(monkeypatch):
    monkeypatch.setattr(download_mod.time, "sleep", lambda s: None)


def cfg_for(tmp_path, **kw):
    base = {"data.root": str(tmp_path / "raw"), "data.image_size": 16}
    base.update(kw)
    return defaults().replace(**base)


def jpeg(color, size=(24, 20)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, color).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def run_prepare(cfg, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    return prepare(load_source(cfg), out, image_size=cfg["data.image_size"], val_fraction=cfg["data.val_fraction"],
                   test_fraction=cfg["data.test_fraction"], split_seed=cfg["data.split_seed"],
                   max_per_class=cfg["data.max_per_class"])


# ----------------------------------------------------------------------------- imagenette
def imagenette_tgz(per_class_train=5, per_class_val=4, corrupt=True) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        def add(name, data):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for c, wnid in enumerate(WNIDS):
            for split, n in (("train", per_class_train), ("val", per_class_val)):
                for i in range(n):
                    add(f"imagenette2-160/{split}/{wnid}/{wnid}_{i}.JPEG", jpeg((40 + 150 * c, 80, i * 20)))
        if corrupt:  # a JPEG cut short: must be skipped and counted, never crash
            add(f"imagenette2-160/train/{WNIDS[0]}/broken.JPEG", jpeg((1, 2, 3))[:100])
        add("imagenette2-160/noisy_imagenette.csv", b"path,noisy_labels_0\n")
    return buf.getvalue()


@pytest.fixture
def mini_imagenette(http_server, monkeypatch):
    data = imagenette_tgz()
    http_server.files["/imagenette2-160.tgz"] = data
    monkeypatch.setitem(imagenette.ARCHIVES, "160",
                        (http_server.url("/imagenette2-160.tgz"), hashlib.md5(data).hexdigest()))
    return data


def test_imagenette_archive_end_to_end(mini_imagenette, http_server, tmp_path):
    cfg = cfg_for(tmp_path, **{"data.name": "imagenette"})
    m = run_prepare(cfg, tmp_path / "out")
    assert m["classes"] == ["tench", "English springer"]
    # official train kept (5 + 5, one corrupt file skipped); official val halved into val/test per class
    assert m["splits"]["train"]["class_counts"] == {"tench": 5, "English springer": 5}
    assert m["splits"]["val"]["class_counts"] == {"tench": 2, "English springer": 2}
    assert m["splits"]["test"]["class_counts"] == {"tench": 2, "English springer": 2}
    assert m["skipped"] == {"train": 1, "val": 0, "test": 0}
    assert m["skipped_files"] == [f"train/{WNIDS[0]}/broken.JPEG"]
    x = torch.load(tmp_path / "out" / "train.pt", weights_only=True)["images"]
    assert x.shape == (10, 3, 16, 16) and x.dtype == torch.uint8
    # a second run reuses archive and extraction: no new request
    run_prepare(cfg, tmp_path / "out2")
    assert len(http_server.requests) == 1


def test_imagenette_cut_download_resumes_with_range(mini_imagenette, http_server, tmp_path):
    http_server.cut_after["/imagenette2-160.tgz"] = len(mini_imagenette) // 3
    folder = imagenette.fetch_imagenette(tmp_path / "raw", "160", progress=False)
    assert (folder / "train" / WNIDS[1]).is_dir()
    assert [r[0] for r in http_server.requests] == ["/imagenette2-160.tgz"] * 2
    assert http_server.requests[1][1].get("Range") == f"bytes={len(mini_imagenette) // 3}-"


def test_imagenette_wrong_md5_rejected_and_nothing_left(mini_imagenette, http_server, tmp_path, monkeypatch):
    monkeypatch.setitem(imagenette.ARCHIVES, "160", (http_server.url("/imagenette2-160.tgz"), "0" * 32))
    with pytest.raises(ChecksumError) as e:
        imagenette.fetch_imagenette(tmp_path / "raw", "160", progress=False)
    assert "expected md5 " + "0" * 32 in str(e.value) and hashlib.md5(mini_imagenette).hexdigest() in str(e.value)
    assert [p for p in (tmp_path / "raw").rglob("*") if p.is_file()] == []


def test_offline_is_one_line_naming_url_and_elpv(tmp_path, monkeypatch, capsys):
    from elimnet.pipeline.common import run_stage
    import importlib.util

    url = "http://127.0.0.1:9/imagenette2-160.tgz"  # nothing listens on the discard port
    monkeypatch.setitem(imagenette.ARCHIVES, "160", (url, "0" * 32))
    spec = importlib.util.spec_from_file_location("prepare_stage_script", Path("stages/prepare.py"))
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    rc = run_stage(script.main, ["--params", os.devnull, "-S", "data.name=imagenette",
                                 "-S", f"data.root={tmp_path / 'raw'}", "--out", str(tmp_path / "p"),
                                 "--metrics", str(tmp_path / "m.json")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert url in err and "data.name=elpv" in err
    assert not (tmp_path / "p").exists()


# ----------------------------------------------------------------------------- taco
TACO_CATEGORIES = [
    {"supercategory": "Can", "id": 10, "name": "Food Can"},
    {"supercategory": "Can", "id": 12, "name": "Drink can"},
    {"supercategory": "Cup", "id": 20, "name": "Paper cup"},
    {"supercategory": "Plastic bag & wrapper", "id": 36, "name": "Plastic film"},
    {"supercategory": "Cigarette", "id": 59, "name": "Cigarette"},
]


def taco_image(size, boxes) -> bytes:
    """Grey photo with each box painted its colour."""
    im = Image.new("RGB", size, (128, 128, 128))
    for (x, y, w, h), color in boxes:
        im.paste(color, (x, y, x + w, y + h))
    buf = io.BytesIO()
    im.save(buf, "PNG")  # lossless, so crop colours can be checked exactly
    return buf.getvalue()


RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


@pytest.fixture
def mini_taco(http_server, monkeypatch):
    # (file, size, [(category id, bbox, colour)]); image 3 is a dead link, 4 is corrupt, 5 has nothing mapped
    spec = [
        ("batch_1/000001.jpg", (80, 60), [(12, (4, 4, 20, 20), RED), (12, (40, 4, 20, 20), RED),
                                          (20, (4, 30, 16, 24), GREEN), (59, (60, 40, 12, 12), BLUE),
                                          (12, (70, 50, 4, 4), RED)]),  # 4 px: below min_size
        ("batch_1/000002.jpg", (60, 80), [(10, (2, 2, 16, 16), RED), (10, (30, 2, 16, 16), RED),
                                          (20, (2, 30, 16, 16), GREEN), (20, (30, 30, 16, 16), GREEN),
                                          (36, (2, 56, 20, 20), BLUE), (36, (30, 56, 20, 20), BLUE)]),
        ("batch_2/000003.jpg", (64, 64), [(36, (0, 0, 30, 30), BLUE), (36, (32, 32, 30, 30), BLUE),
                                          (20, (0, 40, 20, 20), GREEN), (20, (40, 0, 20, 20), GREEN)]),
        ("batch_2/000004.jpg", (64, 64), [(36, (0, 0, 30, 30), BLUE)]),
        ("batch_3/000005.jpg", (64, 64), [(20, (0, 0, 30, 30), GREEN)]),
        ("batch_3/000006.jpg", (64, 64), [(59, (0, 0, 30, 30), BLUE)]),
    ]
    images, annotations = [], []
    for iid, (name, size, objs) in enumerate(spec):
        path = f"/flickr/{iid}.png"
        images.append({"id": iid, "width": size[0], "height": size[1], "file_name": name,
                       "flickr_url": http_server.url(path), "flickr_640_url": http_server.url(f"/z/{iid}.jpg")})
        if iid == 3:
            continue  # never served: 404
        data = taco_image(size, [(b, c) for _, b, c in objs])
        http_server.files[path] = data[:60] if iid == 4 else data
        for cat, box, _ in objs:
            annotations.append({"id": len(annotations) + 1, "image_id": iid, "category_id": cat,
                                "bbox": list(box), "area": box[2] * box[3], "iscrowd": 0})
    annotations.append({"id": 99, "image_id": 3, "category_id": 36, "bbox": [0, 0, 30, 30], "area": 900,
                        "iscrowd": 0})
    coco = {"info": {}, "images": images, "annotations": annotations, "categories": TACO_CATEGORIES}
    data = json.dumps(coco).encode()
    http_server.files["/annotations.json"] = data
    # the first mirror is dead: the pinned-commit URL may vanish, master is the fallback
    monkeypatch.setattr(taco, "ANNOTATIONS_URLS", [http_server.url("/missing.json"),
                                                   http_server.url("/annotations.json")])
    return data


TACO_MAPPING = {"Can": "Metal", "Paper cup": "Paperpack", "Plastic film": "Plasticbag"}


def test_taco_end_to_end_counts_crops_and_cache(mini_taco, http_server, tmp_path):
    cfg = cfg_for(tmp_path, **{"data.name": "taco", "data.taco.mapping": TACO_MAPPING, "data.taco.min_size": 8,
                               "data.taco.padding": 0.0, "data.taco.workers": 3, "data.val_fraction": 0.25,
                               "data.test_fraction": 0.25})
    src = load_source(cfg)
    assert src.classes == ["Metal", "Paperpack", "Plasticbag"]
    assert src.stats["taco"] == {"objects": 18, "kept": 14, "dropped_unmapped": 2, "dropped_small": 1,
                                 "dropped_image_failed": 1, "images_failed": 1,
                                 "per_class": {"Metal": 4, "Paperpack": 6, "Plasticbag": 4}}
    # only images holding a mapped object are fetched, each once (the all-Cigarette one is not)
    fetched = sorted(p for p, _ in http_server.requests if p.startswith("/flickr/"))
    assert fetched == [f"/flickr/{i}.png" for i in range(5)]
    # crops are the boxes: exact size and colour with padding 0
    crop = next(s for s in src.samples if s.ref == "batch_1/000001.jpg#ann3").open()
    assert crop.size == (16, 24) and crop.getpixel((8, 12)) == GREEN
    m = run_prepare(cfg, tmp_path / "out")
    assert m["skipped_total"] == 1 and m["skipped_files"] == ["batch_3/000005.jpg#ann16"]
    totals = {c: sum(m["splits"][s]["class_counts"][c] for s in ("train", "val", "test")) for c in src.classes}
    assert totals == {"Metal": 4, "Paperpack": 5, "Plasticbag": 4}
    assert m["taco"]["per_class"]["Paperpack"] == 6  # the source's counts ride along into metrics/data.json
    n_requests = len(http_server.requests)
    load_source(cfg)  # annotations checked against the recorded sha256, images cached
    assert [p for p, _ in http_server.requests[n_requests:]] == ["/flickr/3.png"]  # only the dead link again
    assert (tmp_path / "raw" / "taco" / "annotations.json.sha256").read_text().strip() == \
        hashlib.sha256(mini_taco).hexdigest()


def test_taco_padding_grows_the_box_within_the_image(mini_taco, tmp_path):
    coco = json.loads(mini_taco)
    _, _, crops, _ = taco.plan_crops(coco, TACO_MAPPING, padding=0.5, min_size=8)
    boxes = {ann: box for _, ann, _, box in crops}
    assert boxes[1] == pytest.approx((0.0, 0.0, 34 / 80, 34 / 60))  # clipped at the top-left corner
    assert boxes[2] == pytest.approx((30 / 80, 0.0, 70 / 80, 34 / 60))


def test_taco_wrong_checksum_rejected_and_nothing_left(mini_taco, tmp_path, monkeypatch):
    monkeypatch.setattr(taco, "ANNOTATIONS_SHA256", "f" * 64)
    with pytest.raises(ChecksumError, match="expected sha256 f{64}"):
        taco.fetch_annotations(tmp_path / "raw", progress=False)
    assert [p for p in (tmp_path / "raw").rglob("*") if p.is_file()] == []


def test_taco_mapping_typo_names_the_key(mini_taco, tmp_path):
    coco = json.loads(mini_taco)
    with pytest.raises(ConfigError, match=r"data.taco.mapping: Drink cann: .*did you mean Drink can"):
        taco.resolve_mapping(coco, {"Drink cann": "Metal"})


def test_taco_default_mapping_is_used_by_params_yaml_and_covers_real_categories():
    import yaml

    # params.yaml keeps `{}` (a long flow mapping does not survive `dvc exp run -S`'s YAML rewrite).
    from conftest import head_file

    params = yaml.safe_load(head_file("params.yaml"))
    assert params["data"]["taco"]["mapping"] == {}
    assert sorted(set(taco.DEFAULT_MAPPING.values())) == ["Metal", "Paper", "Paperpack", "Plastic", "Plasticbag",
                                                           "Styrofoam"]


def test_taco_all_images_unreachable_is_one_clear_error(mini_taco, http_server, tmp_path):
    http_server.files = {"/annotations.json": mini_taco}  # every image now 404s
    coco = json.loads(mini_taco)
    with pytest.raises(DownloadError, match="none of the 5 TACO images.*data.name=elpv"):
        taco.taco_samples(coco, tmp_path, mapping=TACO_MAPPING, padding=0.0, min_size=8, progress=False)


# ----------------------------------------------------------------------------- fashion-mnist
def idx_gz(arr: np.ndarray, magic: int) -> bytes:
    header = np.array([magic, *arr.shape], dtype=">i4").tobytes()
    return gzip.compress(header + arr.astype(np.uint8).tobytes())


def fashion_files(n_train=4, n_test=2) -> dict[str, bytes]:
    out = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.repeat(np.arange(10), n)
        images = (labels[:, None, None] * 25 + np.zeros((1, 28, 28))).astype(np.uint8)
        out[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(images, 2051)
        out[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(labels, 2049)
    return out


def test_fashion_mnist_from_debian_dir(tmp_path, monkeypatch):
    deb = tmp_path / "deb"
    deb.mkdir()
    for name, data in fashion_files().items():
        (deb / name).write_bytes(data)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", deb)
    cfg = cfg_for(tmp_path, **{"data.name": "fashion_mnist"})
    m = run_prepare(cfg, tmp_path / "out")
    assert m["channels"] == 1 and m["classes"][0] == "T-shirt/top" and len(m["classes"]) == 10
    assert {s: m["splits"][s]["size"] for s in ("train", "val", "test")} == {"train": 30, "val": 10, "test": 20}
    x = torch.load(tmp_path / "out" / "test.pt", weights_only=True)
    assert x["images"].shape == (20, 1, 16, 16)  # 28x28 resized to data.image_size
    assert int(x["images"][x["labels"] == 3].float().mean()) == 75  # the pixel value encodes the label
    assert not (tmp_path / "raw").exists()  # nothing downloaded


def test_fashion_mnist_downloads_when_no_debian_package(tmp_path, monkeypatch, http_server):
    files = fashion_files()
    for name, data in files.items():
        http_server.files[f"/fm/{name}"] = data
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "absent")
    monkeypatch.setattr(fashion_mnist, "MIRRORS", [http_server.url("/gone/"), http_server.url("/fm/")])
    monkeypatch.setattr(fashion_mnist, "FILES", {n: hashlib.md5(d).hexdigest() for n, d in files.items()})
    folder = fashion_mnist.fashion_mnist_files(tmp_path / "raw", progress=False)
    assert folder == tmp_path / "raw" / "fashion_mnist"
    samples = fashion_mnist.list_fashion_mnist(folder)
    assert len(samples) == 60 and samples[0].open().size == (28, 28)


def test_truncated_idx_is_a_clear_error(tmp_path):
    arr = np.zeros((3, 28, 28), dtype=np.uint8)  # the header promises 5 images
    (tmp_path / "x.gz").write_bytes(gzip.compress(np.array([2051, 5, 28, 28], dtype=">i4").tobytes() + arr.tobytes()))
    with pytest.raises(DataError, match="truncated"):
        fashion_mnist.read_idx(tmp_path / "x.gz", 2051)


# ----------------------------------------------------------------------------- folder
def make_folder(root: Path, counts: dict[str, int], corrupt: str | None = None) -> Path:
    for c, (name, n) in enumerate(counts.items()):
        d = root / name
        d.mkdir(parents=True)
        for i in range(n):
            (d / f"img_{i:02d}.jpg").write_bytes(jpeg((60 * c, 100, 7 * i)))
    if corrupt:
        (root / corrupt / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return root


def test_folder_corrupt_skipped_counted_and_splits_identical_and_stratified(tmp_path):
    root = make_folder(tmp_path / "imgs", {"cat": 10, "dog": 20, "owl": 10}, corrupt="dog")
    (root / "dog" / "notes.txt").write_text("not an image")
    (root / ".hidden").mkdir()
    cfg = cfg_for(tmp_path, **{"data.name": "folder", "data.path": str(root), "data.val_fraction": 0.2,
                               "data.test_fraction": 0.2})
    a = run_prepare(cfg, tmp_path / "a")
    run_prepare(cfg, tmp_path / "b")
    assert a["classes"] == ["cat", "dog", "owl"] and a["non_image_files"] == 1
    assert a["skipped_total"] == 1 and a["skipped_files"] == ["dog/broken.jpg"]
    # stratified: 20 % of each class in val and in test (dog: 4 of 21 files, less the broken one if it fell there)
    counts = {s: a["splits"][s]["class_counts"] for s in ("train", "val", "test")}
    assert [counts[s]["cat"] for s in counts] == [6, 2, 2] and [counts[s]["owl"] for s in counts] == [6, 2, 2]
    assert sum(counts[s]["dog"] for s in counts) == 20
    assert counts["val"]["dog"] in (3, 4) and counts["test"]["dog"] in (3, 4) and counts["train"]["dog"] in (12, 13)
    for split in ("train", "val", "test"):
        ta = torch.load(tmp_path / "a" / f"{split}.pt", weights_only=True)
        tb = torch.load(tmp_path / "b" / f"{split}.pt", weights_only=True)
        assert torch.equal(ta["images"], tb["images"]) and torch.equal(ta["labels"], tb["labels"])


def test_folder_without_class_subfolders_names_the_path(tmp_path):
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "a.jpg").write_bytes(jpeg((1, 2, 3)))
    with pytest.raises(DataError, match=f"data.path={tmp_path / 'flat'}: has no class subfolders"):
        list_folder(tmp_path / "flat")
    with pytest.raises(DataError, match="must be an existing directory"):
        list_folder(tmp_path / "nope")


def test_folder_class_too_small_names_the_class(tmp_path):
    root = make_folder(tmp_path / "imgs", {"big": 10, "tiny": 2})
    cfg = cfg_for(tmp_path, **{"data.name": "folder", "data.path": str(root)})
    with pytest.raises(DataError, match="class 'tiny' has 2 images"):
        run_prepare(cfg, tmp_path / "out")
    (root / "empty").mkdir()
    with pytest.raises(DataError, match="class 'empty' has no image files"):
        list_folder(root)


# ----------------------------------------------------------------------------- official-split helpers
def fake_samples(n_train, n_val, classes=2):
    return [Sample(lambda: None, c, f"{split}/{c}/{i:03d}", split)
            for c in range(classes) for split, n in (("train", n_train), ("val", n_val)) for i in range(n)]


def test_carve_is_stratified_and_seeded():
    a, b = fake_samples(10, 8), fake_samples(10, 8)
    carve(a, "val", "test", share=0.25, seed=3)
    carve(b[::-1], "val", "test", share=0.25, seed=3)  # listing order does not matter
    for c in range(2):
        assert sum(s.split == "test" and s.label == c for s in a) == 2
    assert [s.split for s in a] == [s.split for s in b]


def test_cap_per_split_keeps_every_split():
    s = fake_samples(90, 10)
    kept = cap_per_split(s, 5, seed=0)
    for c in range(2):
        splits = [x.split for x in kept if x.label == c]
        assert len(splits) == 5 and splits.count("val") == 1 and splits.count("train") == 4


def test_taco_crop_follows_exif_orientation(tmp_path):
    upright = Image.new("RGB", (20, 40), BLUE)
    upright.paste(RED, (0, 0, 20, 20))  # top half red as the annotator saw it
    raw = upright.transpose(Image.Transpose.ROTATE_90)  # stored sideways, 40x20 ...
    exif = Image.Exif()
    exif[0x0112] = 6  # ... with "rotate 90 CW to display"
    raw.save(tmp_path / "p.jpg", "JPEG", quality=98, exif=exif.tobytes())
    crop = taco._open_crop(str(tmp_path / "p.jpg"), 20, 40, (0.0, 0.0, 1.0, 0.5))
    assert crop.size == (20, 20)
    r, g, b = crop.getpixel((10, 10))
    assert r > 200 and b < 50
