"""Are the benchmark's medians reproducible? Three independent runs (separate processes) of
`elimnet bench` on the same params; prints each run's median per model and batch size, its ratio
to the mean of the three, and whether all lie within ±3%. Also the paired latency reduction.

    python benchmarks/latency_stability.py                      # params.yaml model, bs 1 and 64
    python benchmarks/latency_stability.py -S model.arch=resnet18 -S data.image_size=64 --threads 2

Prints ratios only; timing is never asserted in tests.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("-S", "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch-sizes", default="[1,64]")
    p.add_argument("--threads", type=int, default=2, help="torch threads, fixed for every run")
    p.add_argument("--budget-s", type=float, default=10.0, help="time budget per model and batch size")
    p.add_argument("--repeats", type=int, default=1000)
    p.add_argument("--tolerance", type=float, default=0.03)
    args = p.parse_args(argv)
    sets = [f"bench.batch_sizes={args.batch_sizes}", f"bench.threads={args.threads}",
            f"bench.budget_s={args.budget_s}", f"bench.repeats={args.repeats}", "bench.warmup=5", *args.overrides]
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):
            out = Path(tmp) / f"run{i}.json"
            cmd = [sys.executable, "-m", "elimnet.cli", "bench", "--no-progress", "--out", str(out),
                   *[a for s in sets for a in ("-S", s)]]
            subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL,
                           env={**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"})
            results.append(json.loads(out.read_text()))
            print(f"run {i + 1}/{args.runs} done", file=sys.stderr)
    r0 = results[0]
    print(f"{r0['arch']} {r0['image_size']}px, {r0['threads']} threads, {args.runs} independent runs "
          f"(medians in ms; ratio = run / mean of runs)")
    worst = 0.0
    for bs in r0["cpu"]:
        for model in r0["cpu"][bs]:
            meds = [r["cpu"][bs][model]["median_ms"] for r in results]
            mean = sum(meds) / len(meds)
            ratios = [m / mean for m in meds]
            worst = max(worst, *(abs(x - 1) for x in ratios))
            cvs = [r["cpu"][bs][model]["cv"] for r in results]
            print(f"bs={bs:>3} {model:10} medians " + "  ".join(f"{m:8.2f}" for m in meds)
                  + "   ratios " + "  ".join(f"{x:.3f}" for x in ratios)
                  + f"   cv {min(cvs):.1%}-{max(cvs):.1%}")
        reds = [r["cpu"][bs]["candidate"]["reduction"] for r in results]
        print(f"bs={bs:>3} paired reduction per run: " + "  ".join(f"{x:+.1%}" for x in reds))
    verdict = "within" if worst <= args.tolerance else "NOT within"
    print(f"largest deviation from the mean: {worst:.1%} -> {verdict} ±{args.tolerance:.0%}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
