"""timm models through the stage view (model.arch=timm/<name>): a matrix over 34 models, 19 families.

Every model is built with random weights (model.weights=none) and run at 64 px on one thread:
- the view holds exactly timm's parameters and gives timm's logits;
- every valid ELimNet cut k runs, each smaller than the one before;
- LayerPrune removes its lowest-L1 candidate (data-free) and the result runs;
- Model Diet (2 groups) runs where the family's layers allow it, and elsewhere fails with one line
  naming the module and its type.
Weights are never downloaded: the hub call is replaced by a local file or by an offline failure.

`python tests/test_timm.py` prints the docs/zoo.md table (it also tries filter pruning).
"""
from __future__ import annotations

import hashlib
import json
import sys
import time

import pytest
import torch

timm = pytest.importorskip("timm") if __name__ != "__main__" else __import__("timm")

from elimnet.compress.diet import diet  # noqa: E402
from elimnet.compress.elim import elim, set_num_classes  # noqa: E402
from elimnet.compress.layerprune import candidates, layerprune, score_blocks, select_k  # noqa: E402
from elimnet.compress.base import CompressContext  # noqa: E402
from elimnet.config import validate  # noqa: E402
from elimnet.errors import ChecksumError, ConfigError, DownloadError  # noqa: E402
from elimnet.models import count_params, create_model, get_spec, has_model  # noqa: E402
from elimnet.models import timm_adapter  # noqa: E402

SIZE = 64
CLASSES = 6
# timm model -> Model Diet (groups=2) works; False: the family's layers refuse it in one line.
MODELS = {
    "resnet10t": True, "resnet18d": True,
    "mobilenetv3_small_050": True, "lcnet_050": True, "mobilenetv4_conv_small": True, "fbnetv3_b": True,
    "hardcorenas_a": True,
    "efficientnet_b0": True, "efficientnet_lite0": True, "mnasnet_small": True, "tinynet_e": True,
    "semnasnet_050": True, "mobilenetv2_050": True, "spnasnet_100": True, "mixnet_s": False,
    "regnetx_002": False, "regnety_002": False,  # group width 8 gives 3 conv groups
    "ghostnet_050": True, "ghostnetv2_100": True, "repghostnet_050": True,
    "convnext_atto": False, "convnext_femto": False,  # LayerNorm2d
    "repvgg_a0": True, "gernet_s": False,  # 13-channel stem
    "mobilevit_xxs": False, "edgenext_xx_small": False, "efficientvit_b0": False,  # LayerNorm
    "starnet_s050": True, "hgnetv2_b0": False,  # LearnableAffineBlock
    "nf_regnet_b0": False,  # ScaledStdConv2d's gain
    "inception_next_atto": False, "fasternet_t0": False,  # channel splits by fixed sizes
}
# torch-pruning (model.filter) leaves these inconsistent (fixed channel splits, attention reshapes,
# LayerNorm2d, ScaledStdConv2d's gain); the other 26 prune (docs/zoo.md).
FILTER_FAILS = ["mixnet_s", "mobilevit_xxs", "edgenext_xx_small", "efficientvit_b0", "nf_regnet_b0", "fasternet_t0"]
# No removal candidates (every block changes its shape: DLA trees, VoVNet OSA): ELimNet only.
NO_CANDIDATES = ["dla46_c", "ese_vovnet19b_slim"]
# forward_features is not a chain of modules (HRNet's parallel branches, FastViT's re-wired stages).
REFUSED = ["hrnet_w18_small", "fastvit_t8"]

pytestmark = pytest.mark.usefixtures("one_thread")


def family(name: str) -> str:
    return timm.models.model_entrypoint(name).__module__.rsplit(".", 1)[-1]


def run(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(torch.randn(2, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1)))


def built(name: str):
    torch.manual_seed(0)
    net = create_model(f"timm/{name}")
    return set_num_classes(net, CLASSES)[0]


def test_matrix_size():
    assert len(MODELS) >= 30 and len({family(n) for n in MODELS}) >= 12


@pytest.mark.parametrize("name", list(MODELS))
def test_timm_matrix(name):
    arch = f"timm/{name}"
    spec = get_spec(arch)
    torch.manual_seed(0)
    net = create_model(arch)
    torch.manual_seed(0)
    ref = timm.create_model(name).eval()
    assert count_params(net) == count_params(ref)  # the view holds every timm parameter, once
    torch.testing.assert_close(run(net), run(ref), rtol=1e-4, atol=1e-5)  # same init, same logits
    n = len(net.stages)
    assert n == spec.num_stages == len(spec.stage_names) >= 2

    net = set_num_classes(net, CLASSES)[0]
    counts = [count_params(net)]
    for k in range(1, n):  # every valid ELimNet cut
        cut, report = elim(net, k)
        assert len(cut.stages) == n - k and run(cut).shape == (2, CLASSES)
        counts.append(count_params(cut))
        assert counts[-1] < counts[-2] and report["params_after"] == counts[-1]

    cands = candidates(net)
    assert cands and all(b.in_shape == b.out_shape for b in cands)
    ctx = CompressContext(arch=arch, image_size=SIZE, num_classes=CLASSES)
    scores, _ = score_blocks(net, "l1", [b.path for b in cands], ctx, progress=False)
    removed = select_k(scores, 1)
    pruned, report = layerprune(net, removed)
    assert run(pruned).shape == (2, CLASSES) and report["blocks_removed"] == 1
    assert count_params(pruned) == counts[0] - next(b.params for b in cands if b.path == removed[0])

    if MODELS[name]:
        slim, report = diet(net, 2)
        assert run(slim).shape == (2, CLASSES) and count_params(slim) < counts[0]
        assert report["sliced_layers"] > 0
    else:
        with pytest.raises(ConfigError) as e:
            diet(net, 2)
        msg = str(e.value)
        assert msg.startswith("model.diet.groups=2: ") and "\n" not in msg


@pytest.mark.parametrize("name", FILTER_FAILS)
def test_filter_refuses_in_one_line(name):
    from elimnet.compress.filter_prune import filter_prune
    net = built(name)
    with pytest.raises(ConfigError) as e:
        filter_prune(net, 0.25)
    msg = str(e.value)
    assert msg.startswith("model.filter.ratio=0.25: torch-pruning cannot narrow this model") and "\n" not in msg


@pytest.mark.parametrize("name", NO_CANDIDATES)
def test_timm_without_candidates(name):
    net = built(name)
    n = len(net.stages)
    for k in range(1, n):
        assert run(elim(net, k)[0]).shape == (2, CLASSES)
    assert candidates(net) == []


@pytest.mark.parametrize("name", REFUSED)
def test_refused_in_one_line(name):
    with pytest.raises(ConfigError) as e:
        get_spec(f"timm/{name}")
    assert str(e.value).startswith(f"model.arch=timm/{name}: ") and "\n" not in str(e.value)


def test_config_accepts_timm_archs():
    cfg = validate({"model.arch": "timm/resnet10t", "model.weights": "none", "model.elim": 3})
    assert cfg["model.arch"] == "timm/resnet10t" and has_model("timm/resnet10t")
    with pytest.raises(ConfigError, match=r"^model\.elim=4: must be an integer in \[0, 3\]"):
        validate({"model.arch": "timm/resnet10t", "model.weights": "none", "model.elim": 4})
    with pytest.raises(ConfigError, match=r"^model\.arch=timm/not_a_model: must be timm/<name> where timm"):
        validate({"model.arch": "timm/not_a_model", "model.weights": "none"})
    with pytest.raises(ConfigError, match=r"^model\.arch=resnet9000: must be one of .* or timm/<name>"):
        validate({"model.arch": "resnet9000"})
    spec = get_spec("timm/resnet10t")
    assert spec.family == "timm/resnet" and spec.stage_names == ("layer1", "layer2", "layer3", "layer4")
    assert spec.has_pretrained and not spec.offline and spec.weights_name == "timm/resnet10t.c3_in1k"


def test_saved_candidate_replays(tmp_path):
    """All four compressions planned from params on a timm arch; the saved file rebuilds without timm weights."""
    from elimnet.checkpoint import load_model, model_config, save_model
    from elimnet.compress import plan_and_apply

    cfg = validate({"model.arch": "timm/lcnet_050", "model.weights": "none", "model.elim": 1, "model.prune.k": 2,
                    "model.diet.groups": 2, "model.filter.ratio": 0.25})
    torch.manual_seed(0)
    ctx = CompressContext(arch=cfg["model.arch"], image_size=SIZE, num_classes=CLASSES)
    model, steps = plan_and_apply(create_model(cfg["model.arch"]), cfg, ctx)
    assert [s["name"] for s in steps] == ["classifier", "elim", "layerprune", "diet", "filter"]
    save_model(tmp_path / "m.pt", model, model_config(cfg["model.arch"], steps))
    loaded, config = load_model(tmp_path / "m.pt")
    assert config["arch"] == "timm/lcnet_050" and count_params(loaded) == count_params(model)
    torch.testing.assert_close(run(loaded), run(model))


def _fake_hub(tmp_path, calls, state: dict, revision="0123abcd" * 5):
    """A stand-in for huggingface_hub.hf_hub_download serving one local file (no network)."""
    from safetensors.torch import save_file

    def download(repo_id, filename, revision=None, cache_dir=None):
        calls.append({"repo": repo_id, "file": filename, "revision": revision, "cache_dir": cache_dir})
        path = tmp_path / "hub" / "snapshots" / (revision or default) / filename
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            save_file({k: v.contiguous() for k, v in state.items()}, str(path))
        return str(path)
    default = revision
    return download


def test_weights_pinned_on_first_use(tmp_path, monkeypatch):
    import huggingface_hub
    torch.manual_seed(3)
    source = timm.create_model("resnet10t").eval()
    calls = []
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", _fake_hub(tmp_path, calls, source.state_dict()))
    cache = tmp_path / "weights"
    net = create_model("timm/resnet10t", pretrained=True, cache_dir=cache)
    torch.testing.assert_close(run(net), run(source), rtol=1e-4, atol=1e-5)  # the file's weights, in the view
    lock = json.loads((cache / timm_adapter.LOCK_FILE).read_text())
    assert calls[0]["repo"] == "timm/resnet10t.c3_in1k" and calls[0]["revision"] is None
    assert calls[0]["cache_dir"] == cache / "hf" and calls[0]["file"] == "model.safetensors"
    assert lock["timm/resnet10t.c3_in1k"]["revision"] == "0123abcd" * 5
    served = tmp_path / "hub" / "snapshots" / ("0123abcd" * 5) / "model.safetensors"
    assert lock["timm/resnet10t.c3_in1k"]["sha256"] == hashlib.sha256(served.read_bytes()).hexdigest()
    create_model("timm/resnet10t", pretrained=True, cache_dir=cache)
    assert calls[1]["revision"] == "0123abcd" * 5  # the second run asks for the pinned commit
    lock["timm/resnet10t.c3_in1k"]["sha256"] = "0" * 64
    (cache / timm_adapter.LOCK_FILE).write_text(json.dumps(lock))
    with pytest.raises(ChecksumError, match="differs from 0000"):
        create_model("timm/resnet10t", pretrained=True, cache_dir=cache)


def test_offline_weights_name_the_alternatives(tmp_path, monkeypatch):
    import huggingface_hub
    from huggingface_hub.errors import LocalEntryNotFoundError

    def offline(*args, **kwargs):
        raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache and outgoing "
                                      "traffic has been disabled.\nTo enable hf.co look-ups, set HF_HUB_OFFLINE=0.")
    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    with pytest.raises(DownloadError) as e:
        create_model("timm/resnet10t", pretrained=True, cache_dir=tmp_path)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("model.arch=timm/resnet10t with model.weights=imagenet needs "
                                              "timm/resnet10t.c3_in1k/model.safetensors from huggingface.co")
    assert "model.arch=efficientnet_lite0" in msg and "model.weights=none" in msg
    assert not (tmp_path / timm_adapter.LOCK_FILE).exists()


# ----------------------------------------------------------------------------- docs/zoo.md table
def _try(fn) -> str:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - the table reports what fails and why
        first = (str(e).strip().splitlines() or [""])[0].replace("model.diet.groups=2: ", "").replace(
            "model.filter.ratio=0.25: torch-pruning cannot narrow this model consistently ", "").replace("|", "/")
        first = first if len(first) <= 80 else first[:79] + "…"
        return f"no: {first}" if isinstance(e, ConfigError) else f"no ({type(e).__name__}: {first})"


def table_row(name: str) -> str:
    from elimnet.compress.filter_prune import filter_prune
    try:
        net = built(name)
    except ConfigError as e:
        return f"| `timm/{name}` | {family(name)} | refused: {str(e).split(': ', 1)[1]} | | | | | |"
    n, full = len(net.stages), count_params(net)

    def do_elim():
        sizes = [count_params(elim(net, k)[0]) for k in range(1, n) if run(elim(net, k)[0]).shape == (2, CLASSES)]
        return f"yes, k = 1..{n - 1}" if len(sizes) == n - 1 else "no"

    def do_prune():
        cands = candidates(net)
        if not cands:
            return "none (no block keeps its shape)"
        ctx = CompressContext(arch=f"timm/{name}", image_size=SIZE, num_classes=CLASSES)
        scores, _ = score_blocks(net, "l1", [b.path for b in cands], ctx, progress=False)
        run(layerprune(net, select_k(scores, 1))[0])
        return f"yes ({len(cands)} candidates)"

    def do_diet():
        slim, _ = diet(net, 2)
        run(slim)
        return f"yes ({count_params(slim) / full:.0%} params)"

    def do_filter():
        slim, _ = filter_prune(net, 0.25)
        run(slim)
        return f"yes ({count_params(slim) / full:.0%} params)"
    return (f"| `timm/{name}` | {family(name)} | {n}: {', '.join(get_spec(f'timm/{name}').stage_names)} | "
            f"{full:,} | {_try(do_elim)} | {_try(do_prune)} | {_try(do_diet)} | {_try(do_filter)} |")


if __name__ == "__main__":
    torch.set_num_threads(1)
    print("| `model.arch` | timm family | stages (feature_info modules) | params, 6 classes | elim | "
          "LayerPrune (l1, k=1) | Diet (2 groups) | filter (ratio 0.25) |")
    print("|---|---|---|---|---|---|---|---|")
    t0 = time.time()
    for name in sys.argv[1:] or [*MODELS, *NO_CANDIDATES, *REFUSED]:
        print(table_row(name), flush=True)
    print(f"\n<!-- {time.time() - t0:.0f} s, timm {timm.__version__} -->")
