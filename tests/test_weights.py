"""Pretrained weights: pins match torchvision, hashed file names are verified on a loopback
server, offline errors name the URL and the offline arch, and EfficientNet-Lite0's offline
weights are real ImageNet weights (they classify real photos)."""
from __future__ import annotations

import os
import hashlib
import io
import json

import numpy as np
import pytest
import torch
from torchvision import models as tvm

from elimnet.cli import main
from elimnet.config import load_params
from elimnet.data.download import ChecksumError, DownloadError
from elimnet.models import create_model, get_spec
from elimnet.models import weights as W


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def quick_downloads(monkeypatch):
    monkeypatch.setattr(W, "DOWNLOAD_OPTIONS", {"retries": 0, "backoff_s": 0.0, "progress": False})


def _state_bytes(state: dict) -> bytes:
    buf = io.BytesIO()
    torch.save(state, buf, _use_new_zipfile_serialization=False)  # the legacy format of torchvision's files
    return buf.getvalue()


def _serve(http_server, monkeypatch, arch: str, payload: bytes, name_hash: str | None = None) -> str:
    """Serve `payload` under a torchvision-style name `<arch>-<sha256[:8]>.pth` and pin `arch` to it."""
    name = f"/{arch}-{(name_hash or hashlib.sha256(payload).hexdigest())[:8]}.pth"
    http_server.files[name] = payload
    monkeypatch.setitem(W.WEIGHTS, arch, W.PinnedWeights(W.WEIGHTS[arch].enum, http_server.url(name)))
    return name


def test_pins_match_torchvision_enums():
    for arch, w in W.WEIGHTS.items():
        assert tvm.get_weight(w.enum).url == w.url, arch
        spec = get_spec(arch)
        assert (spec.weights_name, spec.weights_url) == (w.enum, w.url)
    assert W.WEIGHTS["resnet50"].enum == "ResNet50_Weights.IMAGENET1K_V1"  # the seeds' recipe, not DEFAULT


def test_sha256_prefix_comes_from_the_file_name():
    assert W.WEIGHTS["resnet18"].sha256_prefix == "f37072fd"
    assert W.WEIGHTS["mnasnet1_0"].sha256_prefix == "f206786ef8"  # dots in the name before the hash
    with pytest.raises(ValueError, match="no sha256 prefix"):
        W.PinnedWeights("X_Weights.V1", "https://host/model.pth").sha256_prefix


def test_every_torchvision_arch_accepts_imagenet_weights():
    for arch in W.WEIGHTS:
        assert load_params("no-such-params.yaml", [f"model.arch={arch}", "model.weights=imagenet"])


def test_good_file_loads_into_the_staged_net_and_is_cached(http_server, monkeypatch, tmp_path):
    from elimnet.checkpoint import load_model
    from elimnet.pipeline.pretrained_stage import run_pretrained

    torch.manual_seed(1)
    tv = tvm.mnasnet0_5(weights=None).eval()
    for b in tv.buffers():  # non-default BN statistics, so that they must load too
        if b.is_floating_point():
            b.copy_(torch.rand_like(b) + 0.5)
    # MNASNet refuses a state_dict without its version metadata: this also checks it survives.
    name = _serve(http_server, monkeypatch, "mnasnet0_5", _state_bytes(tv.state_dict()))
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected = tv(x)
        model = create_model("mnasnet0_5", pretrained=True, cache_dir=tmp_path / "weights").eval()
        assert torch.allclose(model(x), expected, atol=1e-5)
    assert (tmp_path / "weights" / name.lstrip("/")).exists() and len(http_server.requests) == 1

    # The pipeline's pretrained stage reads the same cache (data.root/weights): no second request.
    cfg = load_params("no-such-params.yaml", ["model.arch=mnasnet0_5", "model.weights=imagenet",
                                              f"data.root={tmp_path}"])
    run_pretrained(cfg, tmp_path / "pretrained.pt")
    assert len(http_server.requests) == 1
    saved, conf = load_model(tmp_path / "pretrained.pt")
    with torch.no_grad():
        assert torch.allclose(saved.eval()(x), expected, atol=1e-5)
    assert conf["weights"] == "imagenet"


def test_corrupt_file_is_rejected_and_nothing_cached(http_server, monkeypatch, tmp_path):
    good = _state_bytes(tvm.mobilenet_v3_small(weights=None).state_dict())
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF  # one flipped byte in the middle of a tensor
    _serve(http_server, monkeypatch, "mobilenet_v3_small", bytes(bad), name_hash=hashlib.sha256(good).hexdigest())
    with pytest.raises(ChecksumError, match="checksum mismatch"):
        create_model("mobilenet_v3_small", pretrained=True, cache_dir=tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_file_for_another_arch_is_one_line_error(http_server, monkeypatch, tmp_path):
    _serve(http_server, monkeypatch, "mobilenet_v3_small", _state_bytes({"fc.weight": torch.zeros(3, 3)}))
    with pytest.raises(ValueError) as e:
        create_model("mobilenet_v3_small", pretrained=True, cache_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and "does not fit arch mobilenet_v3_small" in msg
    assert "MobileNet_V3_Small_Weights.IMAGENET1K_V1" in msg


def test_offline_names_the_url_and_the_offline_arch(monkeypatch, tmp_path):
    url = "http://127.0.0.1:9/resnet18-f37072fd.pth"  # the discard port: connection refused
    monkeypatch.setitem(W.WEIGHTS, "resnet18", W.PinnedWeights("ResNet18_Weights.IMAGENET1K_V1", url))
    with pytest.raises(DownloadError) as e:
        create_model("resnet18", pretrained=True, cache_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and url in msg and "model.arch=efficientnet_lite0" in msg
    assert "model.weights=none" in msg


def test_summary_never_downloads(http_server, monkeypatch, capsys):
    _serve(http_server, monkeypatch, "mobilenet_v3_small", b"never fetched")
    assert main(["summary", "--json", "--params", os.devnull, "--num-classes", "3",
                 "-S", "model.arch=mobilenet_v3_small", "-S", "model.weights=imagenet",
                 "-S", "data.image_size=32"]) == 0
    assert json.loads(capsys.readouterr().out)["weights"] == "imagenet"
    assert http_server.requests == []


def _photo(img: np.ndarray) -> torch.Tensor:
    """Center crop, 224 px bicubic, mean = std = 0.5 (EfficientNet-Lite0's preprocessing)."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    x = torch.from_numpy(np.ascontiguousarray(img))
    if x.ndim == 2:  # grayscale
        x = x[..., None].expand(-1, -1, 3)
    x = x.permute(2, 0, 1).float() / 255
    side = min(x.shape[1:])
    x = TF.resize(TF.center_crop(x, [side, side]), [224, 224], interpolation=InterpolationMode.BICUBIC,
                  antialias=True)
    return (x - 0.5) / 0.5


def test_lite0_offline_weights_classify_real_photos():
    from skimage import data

    spec = get_spec("efficientnet_lite0")
    assert spec.offline and spec.mean == spec.std == (0.5, 0.5, 0.5)
    model = create_model("efficientnet_lite0", pretrained=True).eval()
    x = torch.stack([_photo(data.chelsea()), _photo(data.coffee()), _photo(data.camera())])
    with torch.no_grad():
        top = model(x).argmax(1).tolist()
    assert 281 <= top[0] <= 285  # tabby / tiger / Persian / Siamese / Egyptian cat
    assert top[1] == 967  # espresso
    assert top[2] == 872  # tripod
