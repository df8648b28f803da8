"""What finetune and evaluate write and the report reads back (one owner for both directions): eval.json's
record, and the CSV files.

history.csv: one row per epoch (floats to 6 significant digits). predictions.csv: `index,actual,predicted`,
where index is the image's position in the split, so the report pairs two models' rows on it; under data.folds it
is the image's global id (position before the split), so the report also pools the folds' rows on it.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path


def history_csv(rows: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v) for k, v in r.items()})
    return buf.getvalue()


def read_history(path: str | Path) -> list[dict]:
    with open(path) as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def predictions_csv(classes: list[str], y_true: list[int], y_pred: list[int], ids: list[int] | None = None) -> str:
    ids = range(len(y_true)) if ids is None else ids
    return "index,actual,predicted\n" + "".join(f"{i},{classes[a]},{classes[p]}\n"
                                                for i, a, p in zip(ids, y_true, y_pred, strict=True))


def read_predictions(path: str | Path) -> dict[int, tuple[str, str]]:
    """{index: (actual, predicted)} from predictions.csv (row order when there is no index column)."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    return {int(r["index"]) if "index" in r else i: (r["actual"], r["predicted"]) for i, r in enumerate(rows)}


def evaluation_record(m: dict, classes: list[str], split: str, images: int, resamples: int, seed: int) -> dict:
    """eval.json from train.metrics.evaluate's result: loss, acc, macro-F1 with bootstrap CIs, per class, confusion."""
    from elimnet.train import uncertainty
    from elimnet.train.metrics import per_class_f1, support, warn_small_classes

    f1s = per_class_f1(m["y_true"], m["y_pred"], len(classes))
    ci = uncertainty.bootstrap_ci(m["y_true"], m["y_pred"], resamples, seed)
    return {f"{split}_loss": m["loss"], f"{split}_acc": m["acc"], f"{split}_macro_f1": m["macro_f1"],
            f"{split}_acc_ci": ci["acc"], f"{split}_macro_f1_ci": ci["macro_f1"],
            "bootstrap": {"resamples": resamples, "seed": seed, "level": uncertainty.LEVEL},
            "per_class_f1": dict(zip(classes, f1s)),
            "per_class_support": dict(zip(classes, support(m["y_true"], len(classes)))),
            "small_classes": warn_small_classes(m["y_true"], classes, split),
            "confusion": m["confusion"], "classes": classes, "images": images}
