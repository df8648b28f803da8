"""Every registered backbone through the one stage view: build, summary JSON, ELimNet cuts, errors.

Models are built once per arch (VGGs are 140M params) and only cut through the pure `elim`
transform, which copies; 32 px inputs keep every forward pass cheap.
"""
from __future__ import annotations

import os
import functools
import json

import pytest
import torch
from torch import nn

from elimnet.cli import main
from elimnet.compress.elim import elim
from elimnet.config import ConfigError, load_params
from elimnet.models import count_params, create_model, get_spec, list_models, stage_view
from elimnet.models.staged import feature_channels, linears

TORCHVISION = ["resnet18", "resnet34", "resnet50", "efficientnet_b0", "mobilenet_v2", "mobilenet_v3_large",
               "mobilenet_v3_small", "mnasnet0_5", "mnasnet1_0", "vgg16_bn", "vgg19_bn"]
ZOO = ["efficientnet_lite0", *TORCHVISION]
VGG = {"vgg16_bn", "vgg19_bn"}

# Blocks whose output shape equals their input shape, counted by hand from the papers' tables:
# every block but the first of a stage, plus a first block that keeps width and stride
# (ResNet18/34 layer1.0, V3-Large's 16->16, VGG's 64->64 ... convs).
CANDIDATES = {"resnet18": 5, "resnet34": 13, "resnet50": 12, "efficientnet_lite0": 9,
              "efficientnet_b0": 9, "mobilenet_v2": 10, "mobilenet_v3_large": 10,
              "mobilenet_v3_small": 6, "mnasnet0_5": 10, "mnasnet1_0": 10, "vgg16_bn": 9, "vgg19_bn": 12}
# torchvision's published parameter counts (weights.meta["num_params"]): the view shares every module.
TV_PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
             "efficientnet_b0": 5_288_548, "mobilenet_v2": 3_504_872,
             "mobilenet_v3_large": 5_483_032, "mobilenet_v3_small": 2_542_856, "mnasnet0_5": 2_218_512,
             "mnasnet1_0": 4_383_312, "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248}


pytestmark = pytest.mark.usefixtures("one_thread")


@functools.lru_cache(maxsize=None)
def built(arch: str):
    torch.manual_seed(0)
    return create_model(arch).eval()


def test_zoo_is_registered():
    assert set(ZOO) <= set(list_models())
    for arch in TORCHVISION:
        spec = get_spec(arch)
        assert spec.has_pretrained and not spec.offline and spec.weights_url.startswith("https://")
        assert spec.weights_name.endswith("_Weights.IMAGENET1K_V1")
    assert get_spec("efficientnet_lite0").offline


@pytest.mark.parametrize("arch", ZOO)
def test_view_and_elim(arch):
    spec, full = get_spec(arch), built(arch)
    n = len(full.stages)
    assert spec.num_stages == n == len(spec.stage_names)
    if arch in TV_PARAMS:
        assert count_params(full) == TV_PARAMS[arch]
    view = stage_view(full, spec.stage_names, image_size=32)
    assert len(view.candidates) == CANDIDATES[arch]
    assert all(b.in_shape == b.out_shape for b in view.candidates)

    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():  # elim=0 is the model itself
        assert full(x).shape == (2, 1000)
    width = feature_channels(full, 32)
    for k in (1, n - 1):  # each cut copies the model: VGG copies are 0.5 GB
        neck = 0.5 if k == n - 1 else 0  # the deepest cut also gets the fresh 1x1 neck (family's activation)
        cut, report = elim(full, k, neck=neck)
        assert len(cut.stages) == n - k and report["removed_stages"] == list(range(n - k, n))
        assert isinstance(cut.head, nn.Identity)
        if neck:
            assert isinstance(cut.neck[-1], full.act_layer)
            assert cut.neck[0].out_channels == round(0.5 * cut.neck[0].in_channels)
        else:
            assert isinstance(cut.neck, nn.Identity)
        # the first Linear reads exactly what the pool now emits (VGG: channels x 7 x 7)
        area = 49 if arch in VGG else 1
        assert linears(cut.classifier)[0].in_features == feature_channels(cut, 32) * area
        with torch.no_grad():
            assert cut.eval()(x).shape == (2, 1000)
    assert len(full.stages) == n and feature_channels(full, 32) == width  # elim is pure
    with pytest.raises(ValueError) as e:
        elim(full, n)
    assert str(e.value) == f"model.elim={n}: must be an integer in [0, {n - 1}] ({n} stages)"
    with pytest.raises(ConfigError) as e:
        load_params("no-such-params.yaml", [f"model.arch={arch}", f"model.elim={n}"])
    assert str(e.value) == (f"model.elim={n}: must be an integer in [0, {n - 1}] "
                            f"for arch {arch} ({n} stages)")


def test_vgg_stages_are_conv_groups_ending_in_maxpool():
    m = built("vgg19_bn")
    convs = [[sum(isinstance(l, nn.Conv2d) for l in b.modules()) for b in s] for s in m.stages]
    assert convs == [[1, 1, 0], [1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0], [1, 1, 1, 1, 0]]
    assert all(isinstance(s[-1], nn.MaxPool2d) for s in m.stages)
    assert isinstance(m.stem, nn.Identity) and isinstance(m.head, nn.Identity)
    assert m.pool.output_size == (7, 7) and len(linears(m.classifier)) == 3
    cut, _ = elim(m, 4)  # conv1 only: 64 channels x 7 x 7 into the first Linear
    assert linears(cut.classifier)[0].in_features == 64 * 49


def test_mobilenet_v3_view():
    m = built("mobilenet_v3_large")
    widths = [s[-1].out_channels for s in m.stages]
    assert widths == [16, 24, 40, 80, 112, 160]
    assert m.head[0].out_channels == 960 and isinstance(m.head[-1], nn.Hardswish)
    assert [type(l).__name__ for l in m.classifier] == ["Linear", "Hardswish", "Dropout", "Linear"]
    cut, _ = elim(m, 1)  # the 1x1 conv to 960 goes with the top stage: the MLP now reads 112
    assert linears(cut.classifier)[0].in_features == 112
    assert [s[-1].out_channels for s in built("mobilenet_v3_small").stages] == [16, 24, 40, 48, 96]


def _summary(capsys, arch: str, *overrides: str, num_classes: int = 6) -> dict:
    """`elimnet summary --json` in-process, on defaults (not the repo's params.yaml), random init."""
    capsys.readouterr()
    args = ["summary", "--json", "--params", os.devnull, "--num-classes", str(num_classes),
            "-S", f"model.arch={arch}", "-S", "model.weights=none", "-S", "data.image_size=32"]
    for o in overrides:
        args += ["-S", o]
    assert main(args) == 0
    return json.loads(capsys.readouterr().out)


# torchvision/ELimNet published figures, 6 classes (the spine's ELPV setting): full, ELimNet-2.
PUBLISHED = {"resnet18": (11_179_590, 683_846), "efficientnet_b0": (4_015_234, 852_486)}


# One VGG through the CLI is enough: the path is arch-generic and each VGG build costs seconds.
@pytest.mark.parametrize("arch", [a for a in ZOO if a != "vgg16_bn"])
def test_summary_json(capsys, arch):
    spec, full = get_spec(arch), built(arch)
    s = _summary(capsys, arch, "model.elim=2")
    assert s["arch"] == arch and s["weights"] == "none" and s["num_classes"] == 6
    assert [st["name"] for st in s["stages"]] == list(spec.stage_names)
    assert [st["kept"] for st in s["stages"]] == [True] * (spec.num_stages - 2) + [False] * 2
    assert s["removed_stages"] == list(spec.stage_names[-2:])
    last = linears(full.classifier)[-1]
    assert s["full"]["params"] == count_params(full) - 994 * (last.in_features + 1)  # 1000 -> 6 classes
    assert 0 < s["params"] < s["full"]["params"] and 0 < s["macs"] < s["full"]["macs"]
    if arch in PUBLISHED:
        assert (s["full"]["params"], s["params"]) == PUBLISHED[arch]


def test_b0_elim3_published_count(capsys):
    s = _summary(capsys, "efficientnet_b0", "model.elim=3")
    assert (s["full"]["params"], s["params"]) == (4_015_234, 309_146)


def test_summary_rejects_elim_beyond_max(capsys):
    assert main(["summary", "--params", os.devnull, "-S", "model.arch=mobilenet_v3_small",
                 "-S", "model.weights=none", "-S", "model.elim=5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: model.elim=5: must be an integer in [0, 4] for arch mobilenet_v3_small (5 stages)"
