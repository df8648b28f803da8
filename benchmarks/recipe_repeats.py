"""Seeds on one fixed split vs k-fold cross-validation: which gives the narrower delta interval per CPU-minute?

Runs the pipeline's own code (prepare, pretrained, compress, finetune, evaluate) outside DVC, in a work folder:

- seeds: the default split (split seed = data.split_seed), R repeats of both models with repeat_seed(seed, r); the delta
  interval is the two-level bootstrap over repeats and the 393 shared test images;
- kfold: all images in k stratified folds, as the graph makes them with data.folds = k (split seed =
  data.split_seed); fold f tests the models trained on the others (val carved from them) with
  repeat_seed(seed, f); the out-of-fold predictions of every image are pooled, and the interval is the folds'
  two-level bootstrap (uncertainty.folds_two_level_bootstrap), next to the images-only one.

One JSON line per trained model (role, repeat or fold, seconds, test macro-F1, predictions) and one summary line
per design go to --out (appended; finished models are skipped on a rerun, so a stopped run resumes). CPU-minutes
are training + evaluation wall seconds x torch threads / 60, measured in this run (the machine may be shared:
compare the two designs' ratios, not their seconds against other runs).

    nice -n 10 python benchmarks/recipe_repeats.py --work /tmp/repeats --out benchmarks/results/repeats_elpv.jsonl \
        --design seeds --repeats 3 --design kfold --folds 5
"""
from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from elimnet.config import defaults, parse_overrides
from elimnet.train import uncertainty
from elimnet.train.finetune import repeat_seed

ROLES = ("baseline", "candidate")


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def _done(out: Path) -> dict[tuple, dict]:
    if not out.exists():
        return {}
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return {(r["design"], r["index"], r["role"], r["tag"]): r for r in rows if "role" in r}


def _base(work: Path, cfg) -> tuple[Path, Path, Path]:
    """Prepared default split, pretrained weights and the compressed candidate's init, made once."""
    from elimnet.pipeline.compress_stage import run_compress
    from elimnet.pipeline.pretrained_stage import run_pretrained
    from elimnet.pipeline.prepare_stage import run_prepare

    data, pretrained, init = work / "data", work / "pretrained.pt", work / "candidate_init.pt"
    if not (data / "meta.json").exists():
        run_prepare(cfg, data, work / "data.json")
    if not pretrained.exists():
        run_pretrained(cfg, pretrained)
    if not init.exists():
        run_compress(cfg, pretrained, data, init, work / "structure.json")
    return data, pretrained, init


def _fold_data(work: Path, cfg, folds: int) -> list[Path]:
    """The graph's own K-fold layout (prepare with data.folds): one prepared folder per fold."""
    from elimnet.data.prepare import repeat_data_dir
    from elimnet.pipeline.prepare_stage import run_prepare

    top = work / f"folds{folds}"
    if not (top / "meta.json").exists():
        run_prepare(cfg.replace(**{"data.folds": folds, "train.repeats": folds,
                                   "train.repeat_ids": list(range(folds))}), top, work / f"folds{folds}.json")
    return [repeat_data_dir(top, f) for f in range(folds)]


def _train_eval(cfg, data: Path, init: Path, teacher: Path | None, run: Path, role: str, repeat: int) -> dict:
    from elimnet.pipeline.train_stages import run_evaluate, run_finetune

    t0 = time.perf_counter()
    m = run_finetune(cfg, init, data, run / f"{role}.pt", run / f"{role}_history.csv", run / f"{role}_train.json",
                     teacher_path=teacher, role=role, repeat=repeat)
    t1 = time.perf_counter()
    e = run_evaluate(cfg, run / f"{role}.pt", data, run / f"{role}_eval.json", run / f"{role}_predictions.csv")
    t2 = time.perf_counter()
    y = torch.load(data / "test.pt", weights_only=True)["labels"].tolist()
    pred = [e["classes"].index(line.split(",")[2]) for line in
            (run / f"{role}_predictions.csv").read_text().splitlines()[1:]]
    return {"train_s": round(t1 - t0, 1), "eval_s": round(t2 - t1, 1), "best_epoch": m["best_epoch"],
            "test_macro_f1": e["test_macro_f1"], "per_class_f1": e["per_class_f1"], "y_true": y, "y_pred": pred,
            "train_seed": repeat_seed(cfg["seed"], repeat)}


def run_design(design: str, n: int, cfg, work: Path, out: Path, tag: str) -> list[dict]:
    """Train both models n times (repeats or folds); rows already in `out` are reused."""
    data, pretrained, init = _base(work, cfg)
    dirs = [data] * n if design == "seeds" else _fold_data(work, cfg, n)
    done, rows = _done(out), []
    for i, d in enumerate(dirs):
        run = work / "runs" / tag / f"{design}{n}_{i}"
        for role in ROLES:
            key = (f"{design}{n}", i, role, tag)
            if key not in done:
                src = pretrained if role == "baseline" else init
                teacher = run / "baseline.pt" if role == "candidate" else None
                if teacher is not None and not teacher.exists():
                    teacher = None  # the baseline came from an earlier run's JSONL: no KD here anyway
                row = {"design": f"{design}{n}", "index": i, "role": role, "tag": tag,
                       **_train_eval(cfg, d, src, teacher, run, role, i), "threads": torch.get_num_threads()}
                with open(out, "a") as f:
                    f.write(json.dumps(row) + "\n")
                print(f"{design}{n} #{i} {role}: test macro-F1 {row['test_macro_f1']:.4f}, train {row['train_s']} s",
                      flush=True)
                done[key] = row
            rows.append(done[key])
    return rows


def summarize(design: str, rows: list[dict], resamples: int, seed: int) -> dict:
    by = {r: [x for x in rows if x["role"] == r] for r in ROLES}
    if design.startswith("seeds"):
        y = by["baseline"][0]["y_true"]
        d = uncertainty.two_level_bootstrap(y, [x["y_pred"] for x in by["baseline"]],
                                            [x["y_pred"] for x in by["candidate"]], resamples, seed)
    else:
        d = uncertainty.out_of_fold_bootstrap([x["y_true"] for x in by["baseline"]],
                                              [x["y_pred"] for x in by["baseline"]],
                                              [x["y_pred"] for x in by["candidate"]], resamples, seed)
    if not design.startswith("seeds"):  # the graph's interval under data.folds (report/repeats.py)
        d["folds_two_level_ci"] = uncertainty.folds_two_level_bootstrap(
            [x["y_true"] for x in by["baseline"]], [x["y_pred"] for x in by["baseline"]],
            [x["y_pred"] for x in by["candidate"]], resamples, seed)["delta_macro_f1_ci"]
    minutes = sum((x["train_s"] + x["eval_s"]) * x["threads"] for x in rows) / 60
    width = d["delta_macro_f1_ci"][1] - d["delta_macro_f1_ci"][0]
    base_f1 = [x["test_macro_f1"] for x in by["baseline"]]
    return {"design": design, "n": len(by["baseline"]), "delta_macro_f1": d["delta_macro_f1"],
            "delta_macro_f1_ci": d["delta_macro_f1_ci"], "width": width,
            "folds_two_level_ci": d.get("folds_two_level_ci"), "cpu_minutes": round(minutes, 1),
            # a CI's width falls as 1/sqrt(cost): width * sqrt(minutes) is the width one CPU-minute would buy
            "width_x_sqrt_minutes": width * math.sqrt(minutes), "verdict": d["verdict"],
            "baseline_f1": base_f1, "baseline_sd": float(np.std(base_f1, ddof=1)) if len(base_f1) > 1 else None,
            "candidate_f1": [x["test_macro_f1"] for x in by["candidate"]], "cpu": _cpu_model()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True)
    p.add_argument("--out", required=True, help="JSON lines (appended)")
    p.add_argument("--design", action="append", choices=["seeds", "kfold"], required=True)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--folds", type=int, default=5)
    p.add_argument("--tag", default="default", help="names a recipe in the rows (with -S)")
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--summarize-only", action="store_true", help="recompute the summaries from --out's rows")
    args = p.parse_args()
    cfg = defaults().replace(**{"train.checkpoint_dir": None, "mlflow.enabled": False,
                                **parse_overrides(args.overrides)})
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    for design in args.design:
        n = args.repeats if design == "seeds" else args.folds
        if args.summarize_only:
            rows = [r for k, r in _done(out).items() if k[0] == f"{design}{n}" and k[3] == args.tag]
        else:
            rows = run_design(design, n, cfg, work, out, args.tag)
        s = {"summary": True, "tag": args.tag, "overrides": args.overrides,
             **summarize(f"{design}{n}", rows, cfg["train.bootstrap"], cfg["seed"])}
        with open(out, "a") as f:
            f.write(json.dumps(s) + "\n")
        print(json.dumps({k: v for k, v in s.items() if k != "cpu"}), flush=True)


if __name__ == "__main__":
    main()
