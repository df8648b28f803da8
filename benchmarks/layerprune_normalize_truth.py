"""Which `model.prune.normalize` picks better blocks: finetuned test macro-F1 of each variant's removals.

For each (normalize, k) the candidate is built by the compress stage's own code (`run_compress`: pretrained
Lite0, `model.elim=0`, LayerPrune with `criterion=l1`), finetuned as `finetune_candidate` does (`run_finetune`,
the train.* defaults unless overridden) and evaluated on the test split with its bootstrap CI (`run_evaluate`).
`full` is the unpruned model (k = 0) through the same path: the reference every Δ is taken against.
One JSON line per run is appended to --out; runs already there are skipped, so workers can split the list
and a stopped run can be resumed. `--table` prints the markdown table of docs/layerprune.md from --out.

    nice -n 10 python benchmarks/layerprune_normalize_truth.py --work /tmp/lp_truth -S train.threads=1 \
        --run full --run none:1 --run none:2 --run none:3 --run depth:1 --run depth:2 --run depth:3
    python benchmarks/layerprune_normalize_truth.py --table
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from elimnet.bench.hardware import cpu_info
from elimnet.config import defaults, parse_overrides
from elimnet.train.outputs import read_predictions

OUT = Path(__file__).parent / "results" / "layerprune_normalize_truth.jsonl"
# Every run: the full pretrained Lite0 (its 9 candidates span stages 1-5), ranked by the l1 filter norm.
COMMON = ["model.elim=0", "model.prune.criterion=l1", "train.checkpoint_dir=null"]


def run_overrides(run: str) -> list[str]:
    """`full` -> k = 0; `none:2` -> normalize=none, k=2."""
    if run == "full":
        return ["model.prune.k=0"]
    normalize, _, k = run.partition(":")
    return [f"model.prune.normalize={normalize}", f"model.prune.k={int(k)}"]


def prepared(work: Path, cfg) -> tuple[Path, Path]:
    """The default split and the pretrained file, made once per work folder."""
    from elimnet.pipeline.pretrained_stage import run_pretrained
    from elimnet.pipeline.prepare_stage import run_prepare

    data = work / f"data{cfg['data.image_size']}_seed{cfg['seed']}"
    if not (data / "meta.json").exists():
        run_prepare(cfg, data, data.with_suffix(".json"))
    pretrained = work / f"pretrained_{cfg['model.arch']}.pt"
    if not pretrained.exists():
        run_pretrained(cfg, pretrained)
    return data, pretrained


def measure(work: Path, run: str, base_overrides: list[str]) -> dict:
    import torch

    from elimnet.pipeline.compress_stage import run_compress
    from elimnet.pipeline.train_stages import run_evaluate, run_finetune

    overrides = [*COMMON, *base_overrides, *run_overrides(run)]
    cfg = defaults().replace(**parse_overrides(overrides))
    data, pretrained = prepared(work, cfg)
    out = work / "runs" / run.replace(":", "_k")
    structure = run_compress(cfg, pretrained, data, out / "candidate_init.pt", out / "structure.json")
    t0 = time.perf_counter()
    m = run_finetune(cfg, out / "candidate_init.pt", data, out / "model.pt", out / "history.csv", out / "train.json")
    train_s = time.perf_counter() - t0
    e = run_evaluate(cfg, out / "model.pt", data, out / "eval.json", out / "predictions.csv")
    removed = [p for s in structure["steps"] if s["name"] == "layerprune" for p in s.get("removed", [])]
    return {"run": run, "normalize": None if run == "full" else cfg["model.prune.normalize"],
            "k": cfg["model.prune.k"], "removed": removed, "params": structure["candidate"]["params"],
            "full_params": structure["full"]["params"], "epochs": cfg["train.epochs"],
            "best_epoch": m["best_epoch"], "val_macro_f1": m["val_macro_f1"],
            "test_macro_f1": e["test_macro_f1"], "test_macro_f1_ci": e["test_macro_f1_ci"],
            "test_acc": e["test_acc"], "test_images": e["images"], "train_s": round(train_s, 1),
            "test_true": _column(out / "predictions.csv", 0, e["classes"]),
            "test_pred": _column(out / "predictions.csv", 1, e["classes"]),
            "threads": torch.get_num_threads(), "overrides": overrides, "cpu": cpu_info()[0]}


def _column(predictions: Path, which: int, classes: list[str]) -> list[int]:
    """Class indices of evaluate's predictions.csv, in image order: 0 = actual, 1 = predicted (for the paired Δ)."""
    rows = read_predictions(predictions)
    return [classes.index(rows[i][which]) for i in sorted(rows)]


def _delta(row: dict, ref: dict | None, seed: int = 42) -> str:
    """Δ macro-F1 vs the reference, with the paired bootstrap CI over the same test images."""
    if ref is None or row is ref:
        return "–"
    from elimnet.train.uncertainty import paired_bootstrap

    d = paired_bootstrap(ref["test_true"], ref["test_pred"], row["test_pred"], 1000, seed)
    lo, hi = d["delta_macro_f1_ci"]
    return f"{d['delta_macro_f1']:+.3f} [{lo:+.3f}, {hi:+.3f}]"


def table(rows: list[dict]) -> str:
    """Markdown: one row per run, Δ (paired bootstrap CI) against the `full` run with the same epochs."""
    full = {r["epochs"]: r for r in rows if r["run"] == "full"}
    lines = ["| variant | k | blocks removed | params | test macro-F1 [95% CI] | Δ vs full [95% CI] | epochs (best) |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["epochs"], r["run"] != "full", r["normalize"] != "none", r["k"])):
        delta = _delta(r, full.get(r["epochs"]))
        blocks = ", ".join(p.removeprefix("stages.") for p in r["removed"]) or "none"
        lo, hi = r["test_macro_f1_ci"]
        lines.append(f"| {r['normalize'] or 'full'} | {r['k']} | {blocks} | {r['params']:,} | "
                     f"{r['test_macro_f1']:.3f} [{lo:.3f}, {hi:.3f}] | {delta} | {r['epochs']} ({r['best_epoch']}) |")
    return "\n".join(lines + ["", *_variant_deltas(rows)])


def _variant_deltas(rows: list[dict]) -> list[str]:
    """The question itself: depth's removals minus none's at the same k and epochs, paired on the test images."""
    by_run = {(r["epochs"], r["run"]): r for r in rows}
    lines = ["| epochs | k | depth − none, test macro-F1 [95% CI] |", "|---|---|---|"]
    for (epochs, run), r in sorted(by_run.items()):
        if run.startswith("depth:") and (epochs, "none:" + run[6:]) in by_run:
            lines.append(f"| {epochs} | {r['k']} | {_delta(r, by_run[(epochs, 'none:' + run[6:])])} |")
    return lines


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", default="/tmp/layerprune_normalize_truth", help="data, weights and runs (reused)")
    p.add_argument("--out", default=str(OUT), help="JSON lines, one per run (appended)")
    p.add_argument("-S", "--set", dest="base", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every run, e.g. train.threads=1 or train.epochs=3 (repeatable)")
    p.add_argument("--run", action="append", default=[],
                   help="full | none:K | depth:K (repeatable; default: full and k = 1..3 for both)")
    p.add_argument("--table", action="store_true", help="print the markdown table of --out and exit")
    args = p.parse_args()
    out = Path(args.out)
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()] if out.exists() else []
    if args.table:
        print(table(rows))
        return
    done = {(r["run"], tuple(r["overrides"])) for r in rows}
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    for run in args.run or ["full", *(f"{n}:{k}" for n in ("none", "depth") for k in (1, 2, 3))]:
        if (run, tuple([*COMMON, *args.base, *run_overrides(run)])) in done:
            print(f"skip (already in {out}): {run}")
            continue
        row = measure(work, run, args.base)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        lo, hi = row["test_macro_f1_ci"]
        print(f"{run}: removed {row['removed']}, test macro-F1 {row['test_macro_f1']:.4f} [{lo:.4f}, {hi:.4f}], "
              f"{row['train_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
