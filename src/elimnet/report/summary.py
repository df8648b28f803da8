"""metrics/summary.json: the candidate next to its full model, from the stages' metrics files.

Rows per role (size, train/val at the best epoch, test with bootstrap CIs, median latency per backend
and batch size), ratios candidate/full, the paired test statistics, and the exported artifacts' accuracy.
"""
from __future__ import annotations

from pathlib import Path

from elimnet.bench import BACKENDS
from elimnet.errors import StageError
from elimnet.io import read_json
from elimnet.report.repeats import apply_repeats, pool_folds, pool_repeats, repeat_dir
from elimnet.train.outputs import read_history, read_predictions

ROLES = ("baseline", "candidate")
# summary.json's paired statistics, logged to MLflow under the same names (a [lo, hi] as _lo / _hi)
PAIRED = ("delta_test_macro_f1", "delta_test_macro_f1_ci", "delta_test_acc", "delta_test_acc_ci", "mcnemar_p")


def read_stage_metrics(metrics_dir: str | Path) -> dict:
    """What the earlier stages wrote under `metrics_dir`: structure, latency, and per role repeat 0's train,
    eval and history (the curves and confusion figures; the pooled values come from pool_repeats)."""
    m = Path(metrics_dir)
    first = {r: repeat_dir(m, r, 0) for r in ROLES}
    return {"structure": read_json(m / "structure.json"), "latency": read_json(m / "latency.json"),
            "train": {r: read_json(first[r] / "train.json") for r in ROLES},
            "evals": {r: read_json(first[r] / "eval.json") for r in ROLES},
            "histories": {r: read_history(first[r] / "history.csv") for r in ROLES}}


def build_summary(metrics_dir: str | Path, stage_metrics: dict, repeats: int, resamples: int, seed: int,
                  folds: int = 0) -> dict:
    """summary.json without its headline: rows, ratios, repeat 0's paired statistics (McNemar), then the
    values pooled over the repeats with the two-level interval and the verdict (report/repeats.py); with
    `folds` (data.folds = K) the out-of-fold values over the K folds instead, McNemar on the pooled pairs."""
    m = Path(metrics_dir)
    summary = summarize(stage_metrics["structure"], stage_metrics["train"], stage_metrics["evals"],
                        stage_metrics["latency"])
    summary.update(paired_test_stats(*(read_predictions(repeat_dir(m, r, 0) / "predictions.csv") for r in ROLES),
                                     resamples, seed))
    pooled = pool_folds(m, folds, resamples, seed) if folds else pool_repeats(m, repeats, resamples, seed)
    return apply_repeats(summary, pooled)


def paired_test_stats(baseline: dict, candidate: dict, resamples: int, seed: int) -> dict:
    """Candidate minus baseline on the same test images: paired bootstrap CIs and McNemar's exact p."""
    from elimnet.train import uncertainty

    if baseline.keys() != candidate.keys() or any(baseline[i][0] != candidate[i][0] for i in baseline):
        raise StageError("metrics/{baseline,candidate}/predictions.csv: the two models were not evaluated on the "
                         "same test images (index or actual differ); rerun both evaluate stages")
    order = sorted(baseline)
    names = {n: i for i, n in enumerate(sorted({v for i in order for v in (*baseline[i], candidate[i][1])}))}
    y = [names[baseline[i][0]] for i in order]
    a, b = [names[baseline[i][1]] for i in order], [names[candidate[i][1]] for i in order]
    d = uncertainty.paired_bootstrap(y, a, b, resamples, seed)
    return {"delta_test_macro_f1": d["delta_macro_f1"], "delta_test_macro_f1_ci": d["delta_macro_f1_ci"],
            "delta_test_acc": d["delta_acc"], "delta_test_acc_ci": d["delta_acc_ci"],
            "mcnemar_p": uncertainty.mcnemar_p(y, a, b), "paired_images": len(order),
            "bootstrap": {"resamples": resamples, "seed": seed, "level": uncertainty.LEVEL}}


def summarize(structure: dict, train: dict[str, dict], evals: dict[str, dict], latency: dict) -> dict:
    rows = {}
    for role, part in (("baseline", "full"), ("candidate", "candidate")):
        p = structure[part]
        row = {"params": p["params"], "macs": p["macs"], "layers": p["layers"],
               **{k: v for k, v in train[role].items() if k.startswith(("train_", "val_"))},
               **{k: evals[role][k] for k in ("test_loss", "test_acc", "test_macro_f1")},
               **{k: evals[role][k] for k in ("test_acc_ci", "test_macro_f1_ci") if k in evals[role]}}
        for dev in BACKENDS:  # in the registry's order; unmeasured ones are null
            for bs, stats in (latency.get(dev) or {}).items():
                row[f"latency_{dev}_bs{bs}_ms"] = stats[role]["median_ms"]
        rows[role] = row
    b, c = rows["baseline"], rows["candidate"]
    ratios = {"params": c["params"] / b["params"], "macs": c["macs"] / b["macs"], "layers": c["layers"] / b["layers"],
              "test_macro_f1_delta": c["test_macro_f1"] - b["test_macro_f1"],
              "test_acc_delta": c["test_acc"] - b["test_acc"]}
    for dev in BACKENDS:
        for bs, stats in (latency.get(dev) or {}).items():
            ratios[f"latency_reduction_{dev}_bs{bs}"] = stats["candidate"]["reduction"]
    return {"arch": structure["arch"], "weights": structure["weights"], "removed_stages": structure["removed_stages"],
            "steps": [s["name"] for s in structure["steps"] if s["name"] != "classifier"],
            "cuda": latency.get("cuda") is not None, **rows, "ratios": ratios}


