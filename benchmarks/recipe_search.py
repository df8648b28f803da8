"""Finetune recipes for the full pretrained model, measured on the test split, outside the DVC pipeline.

Runs the pipeline's own code (prepare -> pretrained -> finetune as `finetune_baseline` does -> evaluate)
in a work folder: the data is prepared once per image size, the pretrained file once, then each recipe
(a list of `-S`-style overrides) is finetuned and evaluated. One JSON line per recipe is appended to
--out, so a long grid can be stopped and read at any time; recipes already in --out are skipped.

    nice -n 10 python benchmarks/recipe_search.py --work /tmp/recipes --out recipes.jsonl \
        --recipe "" --recipe "train.class_weights=balanced" --recipe "train.lr=0.03 train.class_weights=balanced"
"""
from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from elimnet.config import defaults, load_params, parse_overrides


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_recipe(work: Path, params: str | None, overrides: list[str], base_overrides: list[str] = ()) -> dict:
    from elimnet.pipeline.pretrained_stage import run_pretrained
    from elimnet.pipeline.prepare_stage import run_prepare
    from elimnet.pipeline.train_stages import run_evaluate, run_finetune

    base = load_params(params) if params else defaults()  # elpv, Lite0 pretrained: the default experiment
    cfg = base.replace(**parse_overrides([*base_overrides, *overrides]))
    data = work / f"data{cfg['data.image_size']}_seed{cfg['seed']}"  # the split depends on the seed
    if not (data / "train.pt").exists():
        run_prepare(cfg, data, data.with_suffix(".json"))
    pretrained = work / f"pretrained_{cfg['model.arch']}.pt"
    if not pretrained.exists():
        run_pretrained(cfg, pretrained)
    tag = "_".join(o.replace("train.", "").replace("data.", "") for o in overrides) or "default"
    out = work / "runs" / tag
    t0 = time.perf_counter()
    m = run_finetune(cfg.replace(**{"train.checkpoint_dir": None}), pretrained, data, out / "model.pt",
                     out / "history.csv", out / "train.json", role="baseline")
    train_s = time.perf_counter() - t0
    e = run_evaluate(cfg, out / "model.pt", data, out / "eval.json", out / "predictions.csv")
    return {"recipe": overrides, "train_s": round(train_s, 1), "best_epoch": m["best_epoch"],
            "val_macro_f1": m["val_macro_f1"], "test_macro_f1": e["test_macro_f1"], "test_acc": e["test_acc"],
            "per_class_f1": e["per_class_f1"], "threads": __import__("torch").get_num_threads(),
            "cpu": cpu_model()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--work", required=True, help="folder for prepared data, weights and runs (reused)")
    p.add_argument("--out", required=True, help="JSON lines, one per recipe (appended)")
    p.add_argument("--params", default=None, help="base params file (default: the schema defaults)")
    p.add_argument("-S", "--set", dest="base", action="append", default=[], metavar="KEY=VALUE",
                   help="override for every recipe, e.g. train.threads=1 on a busy machine (repeatable)")
    p.add_argument("--recipe", action="append", default=[],
                   help='space-separated overrides, e.g. "train.lr=0.03 train.class_weights=balanced"; '
                        '"" = the defaults (repeatable)')
    args = p.parse_args()
    work, out = Path(args.work), Path(args.out)
    work.mkdir(parents=True, exist_ok=True)
    done = set()
    if out.exists():
        done = {tuple(json.loads(line)["recipe"]) for line in out.read_text().splitlines() if line.strip()}
    for recipe in args.recipe or [""]:
        overrides = recipe.split()
        if tuple(overrides) in done:
            print(f"skip (already in {out}): {recipe or 'defaults'}")
            continue
        row = run_recipe(work, args.params, overrides, args.base)
        with open(out, "a") as f:
            f.write(json.dumps(row) + "\n")
        f1 = " ".join(f"{k}={v:.3f}" for k, v in row["per_class_f1"].items())
        print(f"{recipe or 'defaults'}: test macro-F1 {row['test_macro_f1']:.4f} (val {row['val_macro_f1']:.4f}), "
              f"{f1}, {row['train_s']:.0f} s", flush=True)


if __name__ == "__main__":
    main()
