"""data.folds: K-fold cross-validation in the graph (prepare's fold layout, the folds' two-level bootstrap, the
report's out-of-fold pooling) and data.split_seed apart from the training seed."""
import json
from collections import Counter

import numpy as np
import pytest
import torch
from PIL import Image

from elimnet.config import defaults
from elimnet.data.prepare import SPLITS, prepare, repeat_data_dir
from elimnet.data.sources import Sample, SourceData
from elimnet.errors import ConfigError, StageError
from elimnet.train import uncertainty

CLASS_SIZES = (15, 30, 45)  # 3 folds: 5/10/15 test images per fold, val_fraction 0.2 of the rest: 2/4/6


def _source() -> SourceData:
    """One constant grey image per sample; its value names the sample (its global id)."""
    samples, i = [], 0
    for label, n in enumerate(CLASS_SIZES):
        for _ in range(n):
            samples.append(Sample(lambda v=i: Image.new("L", (12, 10), v), label, f"c{label}/{i:03d}.png"))
            i += 1
    return SourceData("toy", ["a", "b", "c"], samples, channels=1)


def _prepare(out, split_seed=5, folds=3):
    out.mkdir()
    return prepare(_source(), out, image_size=8, val_fraction=0.2, test_fraction=0.15, split_seed=split_seed,
                   folds=folds)


def _ids(data_dir, split) -> list[int]:
    return torch.load(data_dir / f"{split}.pt", weights_only=True)["images"][:, 0, 0, 0].tolist()


def test_every_image_is_tested_once_and_each_fold_splits_all_images_stratified(tmp_path):
    out = tmp_path / "prepared"
    m = _prepare(out)
    n = sum(CLASS_SIZES)
    dirs = [repeat_data_dir(out, f) for f in range(3)]
    assert dirs == [out, out / "fold1", out / "fold2"] and not (out / "fold0").exists()
    tested = []
    for f, d in enumerate(dirs):
        ids = {s: _ids(d, s) for s in SPLITS}
        assert sorted(ids["train"] + ids["val"] + ids["test"]) == list(range(n))  # disjoint, all images
        meta = json.loads((d / "meta.json").read_text())
        assert meta["fold"] == f and meta["test_ids"] == ids["test"]  # the global id is the pre-split position
        labels = {s: torch.load(d / f"{s}.pt", weights_only=True)["labels"].tolist() for s in SPLITS}
        assert [Counter(labels["test"])[c] for c in range(3)] == [k // 3 for k in CLASS_SIZES]
        assert [Counter(labels["val"])[c] for c in range(3)] == [k * 2 // 3 // 5 for k in CLASS_SIZES]
        assert meta["splits"]["test"]["class_counts"] == dict(zip("abc", [k // 3 for k in CLASS_SIZES]))
        tested += ids["test"]
    assert sorted(tested) == list(range(n))
    assert [f["test"]["size"] for f in m["folds"]] == [n // 3] * 3 and m["splits"] == m["folds"][0]
    assert "test_ids" not in m  # the data metrics stay small


def test_without_folds_every_repeat_reads_the_one_split(tmp_path):
    out = tmp_path / "prepared"
    m = _prepare(out, folds=0)
    assert repeat_data_dir(out, 2) == out and "folds" not in m and not (out / "fold1").exists()
    assert "test_ids" not in json.loads((out / "meta.json").read_text())


def _folder_cfg(tmp_path, **overrides):
    root = tmp_path / "imgs"
    if not root.exists():
        for label, n in enumerate(CLASS_SIZES):
            (root / f"k{label}").mkdir(parents=True)
            for i in range(n):
                Image.new("L", (10, 10), 60 * label + i).save(root / f"k{label}" / f"{i:02d}.png")
    return defaults().replace(**{"data.name": "folder", "data.path": str(root), "data.image_size": 16,
                                 "data.val_fraction": 0.2, "data.folds": 3, "train.repeats": 3,
                                 "train.repeat_ids": [0, 1, 2], **overrides})


def _stage_bytes(tmp_path, name, cfg) -> dict[str, bytes]:
    from elimnet.pipeline.prepare_stage import run_prepare

    out = tmp_path / name
    run_prepare(cfg, out, tmp_path / f"{name}.json")
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*")) if p.is_file()}


def test_the_split_follows_split_seed_not_the_training_seed(tmp_path):
    a = _stage_bytes(tmp_path, "a", _folder_cfg(tmp_path, seed=1))
    assert sorted(a) == sorted(f"{p}{s}" for p in ("", "fold1/", "fold2/")
                               for s in ("meta.json", "train.pt", "val.pt", "test.pt"))
    assert _stage_bytes(tmp_path, "b", _folder_cfg(tmp_path, seed=2)) == a  # byte-identical
    c = _stage_bytes(tmp_path, "c", _folder_cfg(tmp_path, **{"data.split_seed": 43}))
    assert c["test.pt"] != a["test.pt"] and c["fold2/meta.json"] != a["fold2/meta.json"]


def test_folds_must_equal_the_repeats():
    cfg = defaults()  # the default recipe: 5-fold cross-validation, repeat r = fold r
    assert cfg["data.folds"] == cfg["train.repeats"] == 5 and cfg["train.repeat_ids"] == [0, 1, 2, 3, 4]
    with pytest.raises(ConfigError, match=r"^data.folds=5 and train.repeats=3: must be equal"):
        defaults(["train.repeats=3", "train.repeat_ids=[0, 1, 2]"])
    with pytest.raises(ConfigError, match=r"^data.folds=4 and train.repeats=5: must be equal"):
        defaults(["data.folds=4"])
    with pytest.raises(ConfigError, match=r"^data.folds=2: must be 0"):
        defaults(["data.folds=2", "train.repeats=2", "train.repeat_ids=[0, 1]"])
    cfg = defaults(["data.folds=4", "train.repeats=4", "train.repeat_ids=[0,1,2,3]"])
    assert cfg["data.folds"] == 4 and cfg["data.split_seed"] == cfg["seed"] == 42


# ----------------------------------------------------------------------------- the folds' bootstrap
def _folds(sizes=(40, 41, 39), err=0.4, seed=0):
    rng = np.random.default_rng(seed)
    ys = [rng.integers(0, 3, n) for n in sizes]
    return ys, [np.where(rng.random(len(y)) < err, rng.integers(0, 3, len(y)), y) for y in ys]


def test_identical_models_give_a_zero_delta_and_a_zero_interval():
    ys, preds = _folds()
    d = uncertainty.folds_two_level_bootstrap(ys, preds, preds, 1000, seed=3)
    assert d["delta_macro_f1"] == 0 and d["delta_macro_f1_ci"] == [0, 0] and d["delta_acc_ci"] == [0, 0]
    assert d["folds"] == 3 and d["per_repeat_delta_macro_f1"] == [0, 0, 0] and d["verdict"] == "no loss detected"


def test_a_candidate_right_where_the_baseline_is_wrong_gains_exactly_the_baseline_errors():
    ys, preds = _folds(err=0.5)
    d = uncertainty.folds_two_level_bootstrap(ys, preds, ys, 1000, seed=3)
    acc, f1 = uncertainty.accuracy_macro_f1(np.concatenate(ys), np.concatenate(preds))
    assert d["delta_acc"] == pytest.approx(1 - acc) and d["delta_macro_f1"] == pytest.approx(1 - f1)
    assert d["per_repeat_delta_macro_f1"] == pytest.approx([1 - uncertainty.accuracy_macro_f1(y, p)[1]
                                                            for y, p in zip(ys, preds)])
    assert d["delta_macro_f1_ci"][0] > 0 and d["verdict"] == "gain"
    ci = uncertainty.folds_two_level_ci(ys, preds, 1000, seed=3)  # the same draws as the delta's
    assert ci["acc"] == pytest.approx(acc) and ci["acc_ci"] == pytest.approx([1 - v for v in d["delta_acc_ci"][::-1]])


def test_folds_of_different_lengths_are_checked():
    ys, preds = _folds()
    with pytest.raises(ValueError, match="differ in length"):
        uncertainty.folds_two_level_bootstrap(ys, preds, [p[:-1] for p in preds], 1000)


# ----------------------------------------------------------------------------- the report's pooling
def _write_fold(m, role, f, ids, truth, pred, names):
    from elimnet.io import write_json, write_text
    from elimnet.report.repeats import repeat_dir
    from elimnet.train.outputs import predictions_csv

    d = repeat_dir(m, role, f)
    acc, f1 = uncertainty.accuracy_macro_f1(truth, pred)
    write_json(d / "eval.json", {"test_loss": 1.0 + f, "test_acc": acc, "test_macro_f1": f1,
                                 "test_acc_ci": [0, 1], "test_macro_f1_ci": [0, 1],
                                 "per_class_f1": {n: 0.5 for n in names}})
    write_json(d / "train.json", {"best_epoch": f + 1, "val_macro_f1": 0.1 * (f + 1)})
    write_text(d / "predictions.csv", predictions_csv(names, truth.tolist(), pred.tolist(), ids))


def test_report_pools_the_folds_out_of_fold(tmp_path):
    from elimnet.report.repeats import apply_repeats, pool_folds
    from elimnet.report.reproduce import compare_summaries, format_report

    names = ["a", "b", "c"]
    ys, base = _folds(err=0.5, seed=1)
    _, cand = _folds(err=0.3, seed=2)
    cand = [np.where(np.arange(len(y)) % 2 == 0, y, c) for y, c in zip(ys, cand)]
    starts = np.cumsum([0, *map(len, ys)])
    for f, y in enumerate(ys):
        ids = list(range(starts[f], starts[f + 1]))
        _write_fold(tmp_path, "baseline", f, ids, y, base[f], names)
        _write_fold(tmp_path, "candidate", f, ids, y, cand[f], names)
    pooled = pool_folds(tmp_path, 3, 1000, seed=42)
    d = uncertainty.folds_two_level_bootstrap(ys, base, cand, 1000, 42)
    y_all, c_all, b_all = np.concatenate(ys), np.concatenate(cand), np.concatenate(base)
    assert pooled["folds"] == pooled["repeats"] == 3 and pooled["paired_images"] == len(y_all)
    assert pooled["delta_test_macro_f1_ci"] == d["delta_macro_f1_ci"] and pooled["verdict"] == d["verdict"]
    acc, f1 = uncertainty.accuracy_macro_f1(y_all, c_all)
    assert pooled["candidate"]["test_macro_f1"] == f1 and pooled["candidate"]["test_acc"] == acc
    assert pooled["candidate"]["test_macro_f1_ci"] == uncertainty.folds_two_level_ci(ys, cand, 1000, 42)["macro_f1_ci"]
    assert pooled["per_repeat"]["candidate"]["test_macro_f1"] == [uncertainty.accuracy_macro_f1(y, c)[1]
                                                                  for y, c in zip(ys, cand)]
    assert pooled["mcnemar_p"] == uncertainty.mcnemar_p(y_all, b_all, c_all)
    assert len(pooled["per_repeat"]["mcnemar_p"]) == 3
    assert pooled["baseline"]["test_loss"] == pytest.approx(np.average([1, 2, 3], weights=list(map(len, ys))))
    summary = {"baseline": {}, "candidate": {}, "ratios": {}}
    apply_repeats(summary, pooled)
    assert summary["folds"] == 3 and summary["ratios"]["test_macro_f1_delta"] == pytest.approx(d["delta_macro_f1"])
    text = format_report(compare_summaries(summary, {**summary, "folds": 0}))
    assert "(3 folds), committed" in text and "(3 repeats): agree" in text


def test_report_refuses_folds_that_test_an_image_twice(tmp_path):
    from elimnet.report.repeats import pool_folds

    ys, preds = _folds(sizes=(20, 20, 20))
    for f, y in enumerate(ys):
        for role in ("baseline", "candidate"):
            _write_fold(tmp_path, role, f, list(range(20 * min(f, 1), 20 * min(f, 1) + 20)), y, preds[f], "abc")
    with pytest.raises(StageError, match="baseline/r2/predictions.csv: test images of an earlier fold"):
        pool_folds(tmp_path, 3, 1000, seed=0)


@pytest.mark.slow
def test_the_graph_with_folds_tests_every_image_once_and_reports_out_of_fold(tmp_path):
    import yaml
    from stage_runner import TINY_GRAPH, fruit_folder, run_default_graph

    imgs = fruit_folder(tmp_path / "imgs")
    params = {"data": {"name": "folder", "path": str(imgs), "image_size": 32, "val_fraction": 0.25, "folds": 3},
              "train": {"epochs": 1, "batch_size": 8, "threads": 1, "repeats": 3, "repeat_ids": [0, 1, 2]},
              "mlflow": {"enabled": False}, **TINY_GRAPH}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    run_default_graph(tmp_path / "params.yaml", tmp_path)

    m = tmp_path / "metrics"
    data = json.loads((m / "data.json").read_text())
    assert sum(f["test"]["size"] for f in data["folds"]) == 24  # stratified: 8 per class -> 2 or 3 per fold
    assert all(sorted(set(f["test"]["class_counts"].values())) in ([2], [3], [2, 3]) for f in data["folds"])
    for role in ("baseline", "candidate"):
        ids = [int(row.split(",")[0]) for f in range(3)
               for row in (m / role / f"r{f}" / "predictions.csv").read_text().splitlines()[1:]]
        assert sorted(ids) == list(range(24))  # every image tested once, by the fold's models
    summary = json.loads((m / "summary.json").read_text())
    assert summary["folds"] == summary["repeats"] == 3 and summary["paired_images"] == 24
    assert len(summary["per_repeat"]["candidate"]["test_macro_f1"]) == 3 and summary["verdict"] is not None
    assert json.loads((m / "headline.json").read_text())["repeats"] == 3


class _Seen(Exception):
    pass


@pytest.mark.parametrize("repeat", [0, 2])
def test_the_finetune_of_repeat_r_trains_on_fold_r_and_never_sees_its_test_images(tmp_path, monkeypatch, repeat):
    """Repeat r of finetune_* must read fold r's train/val (a repeat reading fold 0's train split saw ~85% of
    fold r's test images: the release run's folds 1-4 scored 0.67-0.83 against fold 0's 0.54)."""
    import elimnet.pipeline.train_stages as stages
    from elimnet.checkpoint import model_config, save_model
    from elimnet.models import create_model

    out = tmp_path / "prepared"
    _prepare(out)
    init = tmp_path / "init.pt"
    save_model(init, create_model("resnet18", pretrained=False), model_config("resnet18", [], weights="none",
                                                                              image_size=8))
    seen = {}

    def capture(model, train, val, *args, **kwargs):
        seen.update(train=train.images[:, 0, 0, 0].tolist(), val=val.images[:, 0, 0, 0].tolist())
        raise _Seen
    monkeypatch.setattr(stages, "finetune", capture)
    cfg = defaults(["data.folds=3", "train.repeats=3", "train.repeat_ids=[0,1,2]", "train.checkpoint_dir=null"])
    with pytest.raises(_Seen):
        stages.run_finetune(cfg, init, out, tmp_path / "m.pt", tmp_path / "h.csv", tmp_path / "t.json",
                            role="baseline", repeat=repeat)
    fold = repeat_data_dir(out, repeat)
    assert sorted(seen["train"]) == sorted(_ids(fold, "train")) and sorted(seen["val"]) == sorted(_ids(fold, "val"))
    assert not set(seen["train"] + seen["val"]) & set(_ids(fold, "test"))
