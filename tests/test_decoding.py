"""Images decode to what they show: high bit depths scaled by their range, EXIF orientation, CMYK,
palette and alpha converted; unreadable files dropped before the split and listed with reasons."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import FIXED_SPLIT
from elimnet.data.prepare import DataError, prepare, to_8bit, to_square_array
from elimnet.data.sources import Sample, SourceData, open_path

RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)


def _decoded(path, size=8, channels=3) -> np.ndarray:
    return to_square_array(open_path(path)(), size, channels)


def test_16bit_png_is_scaled_by_its_range(tmp_path):
    """A 12-bit ramp stored in 16 bits (0..4095): Pillow's own convert clipped it to 255 almost everywhere."""
    ramp = np.tile(np.linspace(0, 4095, 64).astype(np.uint16), (64, 1))
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    with Image.open(tmp_path / "deep.png") as im:
        assert im.mode.startswith("I")  # really stored as 16-bit
    x = _decoded(tmp_path / "deep.png", size=64, channels=1)[0]
    assert x.min() == 0 and x.max() == 255
    assert abs(int(x[:, 32].mean()) - 128) <= 3  # the middle of the ramp is mid-grey, not white
    assert np.all(np.diff(x[0].astype(int)) >= 0)  # still a ramp


def test_float_tiff_is_scaled_by_its_range(tmp_path):
    a = np.zeros((32, 32), dtype=np.float32)
    a[:, 16:] = 0.75  # a float image in [0, 1]: Pillow's convert made it all black
    a[0, 0] = np.nan  # ignored for the range
    Image.fromarray(a, mode="F").save(tmp_path / "f.tif")
    x = _decoded(tmp_path / "f.tif", size=32, channels=1)[0]
    assert x[5, 2] == 0 and x[5, 30] == 255


@pytest.mark.parametrize("values,reason", [(np.full((8, 8), 7.0), "single value"),
                                           (np.full((8, 8), np.nan), "without finite pixel values")])
def test_float_image_without_a_range_is_rejected_with_the_reason(values, reason):
    with pytest.raises(DataError, match=reason):
        to_8bit(Image.fromarray(values.astype(np.float32), mode="F"))


def test_exif_orientation_is_honoured(tmp_path):
    """Stored as 40x20 landscape (left red, right blue) with tag 6: shown rotated 90 degrees clockwise,
    i.e. 20x40 portrait with red on top."""
    im = Image.new("RGB", (40, 20), RED)
    im.paste(BLUE, (20, 0, 40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6
    im.save(tmp_path / "rot.jpg", quality=95, exif=exif)
    upright = open_path(tmp_path / "rot.jpg")()
    assert upright.size == (20, 40)
    top, bottom = upright.getpixel((10, 5)), upright.getpixel((10, 35))
    assert top[0] > 200 and top[2] < 60 and bottom[2] > 200 and bottom[0] < 60


def test_cmyk_palette_and_alpha_are_converted(tmp_path):
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=95)  # red in CMYK
    Image.new("RGB", (16, 16), BLUE).convert("P").save(tmp_path / "pal.png")
    rgba = Image.new("RGBA", (16, 16), (0, 0, 0, 0))  # fully transparent black: shows white
    rgba.paste((255, 0, 0, 255), (0, 0, 8, 16))  # opaque red left half
    rgba.save(tmp_path / "alpha.png")
    pal_t = Image.new("P", (16, 16), 0)
    pal_t.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    pal_t.paste(1, (8, 0, 16, 16))
    pal_t.save(tmp_path / "pal_t.png", transparency=0)  # palette index 0 (black) transparent
    cmyk = _decoded(tmp_path / "cmyk.jpg")
    assert cmyk[0].min() > 230 and cmyk[1].max() < 30 and cmyk[2].max() < 30
    assert tuple(_decoded(tmp_path / "pal.png")[:, 4, 4]) == BLUE
    alpha = _decoded(tmp_path / "alpha.png", size=16)
    assert tuple(alpha[:, 8, 2]) == RED and tuple(alpha[:, 8, 13]) == WHITE
    pal = _decoded(tmp_path / "pal_t.png", size=16)
    assert tuple(pal[:, 8, 2]) == WHITE and tuple(pal[:, 8, 13]) == RED


def _img(v):
    return lambda: Image.new("L", (20, 20), v)


def _corrupt():
    raise OSError("image file is truncated")


def test_unreadable_files_take_no_split_slot_and_are_listed_with_reasons(tmp_path):
    """6 readable + 1 corrupt + 1 constant float per class: the split is the one the 6 readable alone get."""
    def samples(with_bad: bool):
        out = []
        for c in range(2):
            out += [Sample(_img(40 + 100 * c + i), c, f"c{c}/ok{i}.png") for i in range(6)]
            if with_bad:
                out += [Sample(_corrupt, c, f"c{c}/broken.png"),
                        Sample(lambda: Image.fromarray(np.full((4, 4), 3.0, np.float32), mode="F"), c, f"c{c}/flat.tif")]
        return out

    clean_dir, dirty_dir = tmp_path / "clean", tmp_path / "dirty"
    clean_dir.mkdir(), dirty_dir.mkdir()
    kw = dict(image_size=8, val_fraction=0.2, test_fraction=0.2, split_seed=3)
    prepare(SourceData("toy", ["a", "b"], samples(False), channels=1), clean_dir, **kw)
    m = prepare(SourceData("toy", ["a", "b"], samples(True), channels=1), dirty_dir, **kw)
    for split in ("train", "val", "test"):
        a = torch.load(clean_dir / f"{split}.pt", weights_only=True)
        b = torch.load(dirty_dir / f"{split}.pt", weights_only=True)
        assert torch.equal(a["images"], b["images"]) and torch.equal(a["labels"], b["labels"])
    assert m["skipped_total"] == 4 and m["skipped"] == {"before_split": 4}
    assert m["skipped_reasons"]["c0/broken.png"] == "OSError: image file is truncated"
    assert "single value" in m["skipped_reasons"]["c1/flat.tif"]


def test_skipped_reasons_reach_metrics_data_json(tmp_path):
    from elimnet.config import defaults
    from elimnet.pipeline.prepare_stage import run_prepare

    root = tmp_path / "imgs"
    for c, name in enumerate(("cat", "dog")):
        (root / name).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (12, 12), (60 * c, 100, 20 * i)).save(root / name / f"{i}.png")
    (root / "dog" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    cfg = defaults().replace(**{"data.name": "folder", "data.path": str(root), "data.image_size": 16,
                                "data.val_fraction": 0.2, "data.test_fraction": 0.2, **FIXED_SPLIT})  # 5 per class
    run_prepare(cfg, tmp_path / "prepared", tmp_path / "metrics" / "data.json")
    data = json.loads((tmp_path / "metrics" / "data.json").read_text())
    assert list(data["skipped_reasons"]) == ["dog/broken.png"]
    assert data["skipped_reasons"]["dog/broken.png"] == "OSError: Truncated File Read"
    assert data["skipped_total"] == 1 and "skipped_files" not in data


def test_the_per_class_cap_counts_readable_images(tmp_path):
    """8 readable + 4 corrupt files per class, data.max_per_class=5: each class gets 5 readable images,
    whichever files the seeded order tries first. Before, corrupt files took slots of the cap."""
    samples = []
    for c in range(2):
        samples += [Sample(_img(40 + 100 * c + i), c, f"c{c}/ok{i}.png") for i in range(8)]
        samples += [Sample(_corrupt, c, f"c{c}/broken{i}.png") for i in range(4)]
    for seed in range(4):  # several orders: corrupt files come first in some, last in others
        out = tmp_path / str(seed)
        out.mkdir()
        m = prepare(SourceData("toy", ["a", "b"], samples, channels=1), out, image_size=8, val_fraction=0.2,
                    test_fraction=0.2, split_seed=seed, max_per_class=5)
        per_class = [sum(m["splits"][s]["class_counts"][name] for s in ("train", "val", "test")) for name in "ab"]
        assert per_class == [5, 5]
        assert m["skipped_total"] == len(m["skipped_reasons"]) <= 8
        assert all("broken" in ref for ref in m["skipped_reasons"])
