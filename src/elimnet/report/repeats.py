"""Repeated training, pooled: per-repeat outputs -> pooled metrics, the two-level interval and the verdict.

Repeat r of a role writes metrics/<role>/r<r>/{train.json,history.csv,eval.json,predictions.csv,export.json}
(dvc.yaml's foreach/matrix over train.repeat_ids). The report keeps every repeat's value next to the
pooled one (the mean over repeats), and the delta's CI and verdict come from the two-level bootstrap
over repeats and the shared test images (elimnet.train.uncertainty.two_level_bootstrap).

With data.folds = K, repeat r is fold r (its own test images, every image tested once): the pooled values are
the out-of-fold ones (all folds' predictions scored together, paired on the images' global ids), and the CIs
and verdict come from the folds' two-level bootstrap (uncertainty.folds_two_level_bootstrap).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from elimnet.deploy.artifacts import PRECISIONS, onnx_name
from elimnet.errors import StageError
from elimnet.io import read_json
from elimnet.train import uncertainty
from elimnet.train.outputs import read_predictions

ROLES = ("baseline", "candidate")
FILES = ("train.json", "history.csv", "eval.json", "predictions.csv", "export.json")
# eval.json values pooled as the mean over repeats; each gets its own per-repeat list
POOLED_EVAL = ("test_loss", "test_acc", "test_macro_f1")


def repeat_dir(metrics_dir: str | Path, role: str, repeat: int) -> Path:
    """Where repeat `repeat` of `role` writes its metrics: the one place that knows the layout."""
    return Path(metrics_dir) / role / f"r{repeat}"


def repeat_files(metrics_dir: str | Path, repeats: int) -> list[Path]:
    """Every per-repeat metrics file that exists (MLflow artifacts)."""
    return [p for role in ROLES for r in range(repeats) for f in FILES
            if (p := repeat_dir(metrics_dir, role, r) / f).is_file()]


def _predictions(path: Path) -> dict[int, tuple[str, str]]:
    if not path.is_file():
        raise StageError(f"{path}: missing; run the evaluate stages of every repeat (dvc repro)")
    return read_predictions(path)


def _class_ids(rows: dict[str, list[dict]]) -> dict[str, int]:
    """Class name -> integer, over every prediction file's names (sorted: the same ids for every file)."""
    names = sorted({v for role in ROLES for pred in rows[role] for pair in pred.values() for v in pair})
    return {n: k for k, n in enumerate(names)}


def paired_arrays(metrics_dir: str | Path, repeats: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Truth (n,) and each role's predictions (repeats, n), every row paired on the test image's index."""
    rows = {role: [_predictions(repeat_dir(metrics_dir, role, r) / "predictions.csv") for r in range(repeats)]
            for role in ROLES}
    first = rows["baseline"][0]
    for role in ROLES:
        for r, pred in enumerate(rows[role]):
            if pred.keys() != first.keys() or any(pred[i][0] != first[i][0] for i in first):
                raise StageError(f"{repeat_dir(metrics_dir, role, r) / 'predictions.csv'}: not the test images of "
                                 f"baseline repeat 0 (index or actual differ); rerun the evaluate stages")
    order = sorted(first)
    ids = _class_ids(rows)
    y = np.array([ids[first[i][0]] for i in order])
    preds = {role: np.array([[ids[pred[i][1]] for i in order] for pred in rows[role]]) for role in ROLES}
    return y, preds


def fold_arrays(metrics_dir: str | Path, folds: int) -> tuple[list[np.ndarray], dict[str, list[np.ndarray]], dict]:
    """Per fold: truth and each role's predictions, paired on the images' global ids within the fold; the
    folds' test images must be disjoint (every image tested once). Also the class-name -> id map."""
    rows = {role: [_predictions(repeat_dir(metrics_dir, role, f) / "predictions.csv") for f in range(folds)]
            for role in ROLES}
    seen: set[int] = set()
    for f, base in enumerate(rows["baseline"]):
        cand = rows["candidate"][f]
        if cand.keys() != base.keys() or any(cand[i][0] != base[i][0] for i in base):
            raise StageError(f"{repeat_dir(metrics_dir, 'candidate', f) / 'predictions.csv'}: not the test images "
                             f"of baseline fold {f} (index or actual differ); rerun the evaluate stages")
        if seen & base.keys():
            raise StageError(f"{repeat_dir(metrics_dir, 'baseline', f) / 'predictions.csv'}: test images of an "
                             f"earlier fold again (data.folds={folds}); rerun prepare and the evaluate stages")
        seen |= base.keys()
    ids = _class_ids(rows)
    orders = [sorted(base) for base in rows["baseline"]]
    y = [np.array([ids[base[i][0]] for i in order]) for base, order in zip(rows["baseline"], orders)]
    preds = {role: [np.array([ids[pred[i][1]] for i in order]) for pred, order in zip(rows[role], orders)]
             for role in ROLES}
    return y, preds, ids


def _mean(values: list) -> float | None:
    vals = [v for v in values if isinstance(v, (int, float))]
    return float(np.mean(vals)) if len(vals) == len(values) and vals else None


def _pooled_role(metrics_dir: Path, role: str, repeats: int, ci: dict | None) -> dict:
    """One role's pooled row: mean test/train values, the CIs in `ci` (two-level; None: repeat 0's own),
    per-repeat lists, deployed accuracy."""
    evals = [read_json(repeat_dir(metrics_dir, role, r) / "eval.json") for r in range(repeats)]
    trains = [read_json(repeat_dir(metrics_dir, role, r) / "train.json") for r in range(repeats)]
    row = {k: _mean([e[k] for e in evals]) for k in POOLED_EVAL}
    row.update({k: _mean([t.get(k) for t in trains]) for k in trains[0] if k.startswith(("train_", "val_"))})
    if ci is not None:
        row.update(test_acc_ci=ci["acc"], test_macro_f1_ci=ci["macro_f1"])
    else:
        row.update({k: evals[0][k] for k in ("test_acc_ci", "test_macro_f1_ci") if k in evals[0]})
    row["per_repeat"] = {**{k: [e[k] for e in evals] for k in POOLED_EVAL},  # pool_repeats moves it up
                         "best_epoch": [t.get("best_epoch") for t in trains]}
    row["per_class_f1"] = {c: _mean([e["per_class_f1"][c] for e in evals]) for c in evals[0].get("per_class_f1", {})}
    exports = [repeat_dir(metrics_dir, role, r) / "export.json" for r in range(repeats)]
    if all(p.is_file() for p in exports):
        row.update(deployed_accuracy([read_json(p)["accuracy"] for p in exports]))
    return row


def deployed_accuracy(accuracies: list[dict]) -> dict:
    """Test acc/macro-F1 of each exported precision (export.json's `accuracy`, one per repeat), the mean over
    the repeats, as summary columns next to torch's: test_macro_f1_onnx_int8 etc."""
    return {f"test_{k}_{onnx_name(precision)}": _mean([a[precision][k] for a in accuracies])
            for precision in PRECISIONS if accuracies and all(precision in a for a in accuracies)
            for k in ("acc", "macro_f1")}


def pool_repeats(metrics_dir: str | Path, repeats: int, resamples: int, seed: int) -> dict:
    """{"repeats", "baseline": row, "candidate": row, delta_* with the two-level CI, "verdict",
    "per_repeat": {"baseline": {metric: [one per repeat]}, "candidate": ..., "delta_test_macro_f1": [...]}}.

    One repeat: the delta's CI is the paired bootstrap over images alone, the verdict None and "verdict_note"
    says why (training variance not measured)."""
    m = Path(metrics_dir)
    y, preds = paired_arrays(m, repeats)
    d = uncertainty.two_level_bootstrap(y, preds["baseline"], preds["candidate"], resamples, seed)
    rows = {role: _pooled_role(m, role, repeats, uncertainty.two_level_ci(y, preds[role], resamples, seed)
                               if repeats > 1 else None) for role in ROLES}
    out = {"repeats": repeats, "folds": 0, **rows,
           "delta_test_macro_f1": d["delta_macro_f1"], "delta_test_macro_f1_ci": d["delta_macro_f1_ci"],
           "delta_test_acc": d["delta_acc"], "delta_test_acc_ci": d["delta_acc_ci"], "verdict": d["verdict"],
           "per_repeat": {"delta_test_macro_f1": d["per_repeat_delta_macro_f1"],
                          "mcnemar_p": [uncertainty.mcnemar_p(y, a, b)
                                        for a, b in zip(preds["baseline"], preds["candidate"])]},
           "paired_images": len(y),
           "bootstrap": {"resamples": resamples, "seed": seed, "level": uncertainty.LEVEL,
                         "levels": ["repeats", "test images"] if repeats > 1 else ["test images"]}}
    # Per-repeat lists sit at the top level, next to the pooled rows: MLflow logs the rows' numbers, and a
    # two-value list there would read as an interval (_lo/_hi).
    out["per_repeat"].update({role: rows[role].pop("per_repeat") for role in ROLES})
    if "note" in d:
        out["verdict_note"] = d["note"]
    return out


def pool_folds(metrics_dir: str | Path, folds: int, resamples: int, seed: int) -> dict:
    """pool_repeats' dict for K-fold cross-validation (repeat r = fold r): test acc/macro-F1, per-class F1 and
    the delta are out of fold (every image once), test_loss the image-weighted mean of the folds'; CIs and
    verdict from the folds' two-level bootstrap; McNemar on the pooled pairs; per fold in per_repeat."""
    from elimnet.train.metrics import per_class_f1  # lazy: imports torch

    m = Path(metrics_dir)
    y, preds, ids = fold_arrays(m, folds)
    d = uncertainty.folds_two_level_bootstrap(y, preds["baseline"], preds["candidate"], resamples, seed)
    y_all, pooled = np.concatenate(y), {role: np.concatenate(preds[role]) for role in ROLES}
    rows = {}
    for role in ROLES:
        c = uncertainty.folds_two_level_ci(y, preds[role], resamples, seed)
        row = _pooled_role(m, role, folds, {"acc": c["acc_ci"], "macro_f1": c["macro_f1_ci"]})
        losses = [read_json(repeat_dir(m, role, f) / "eval.json")["test_loss"] for f in range(folds)]
        f1s = dict(zip(ids, per_class_f1(y_all, pooled[role], len(ids))))
        row.update(test_acc=c["acc"], test_macro_f1=c["macro_f1"],
                   test_loss=float(np.average(losses, weights=[len(t) for t in y])),
                   per_class_f1={name: f1s.get(name) for name in row["per_class_f1"]} or f1s)
        rows[role] = row
    out = {"repeats": folds, "folds": folds, **rows,
           "delta_test_macro_f1": d["delta_macro_f1"], "delta_test_macro_f1_ci": d["delta_macro_f1_ci"],
           "delta_test_acc": d["delta_acc"], "delta_test_acc_ci": d["delta_acc_ci"], "verdict": d["verdict"],
           "mcnemar_p": uncertainty.mcnemar_p(y_all, pooled["baseline"], pooled["candidate"]),
           "per_repeat": {"delta_test_macro_f1": d["per_repeat_delta_macro_f1"],
                          "mcnemar_p": [uncertainty.mcnemar_p(t, a, b)
                                        for t, a, b in zip(y, preds["baseline"], preds["candidate"])]},
           "paired_images": len(y_all),
           "bootstrap": {"resamples": resamples, "seed": seed, "level": uncertainty.LEVEL,
                         "levels": ["folds", "test images within each fold"]}}
    out["per_repeat"].update({role: rows[role].pop("per_repeat") for role in ROLES})
    return out


def apply_repeats(summary: dict, pooled: dict) -> dict:
    """summary.json with the pooled values in place of repeat 0's, per-repeat lists next to them."""
    for role in ROLES:
        summary[role].update(pooled[role])
    b, c = summary["baseline"], summary["candidate"]
    summary["ratios"].update(test_macro_f1_delta=c["test_macro_f1"] - b["test_macro_f1"],
                             test_acc_delta=c["test_acc"] - b["test_acc"])
    summary.update({k: v for k, v in pooled.items() if k not in ROLES})
    return summary
