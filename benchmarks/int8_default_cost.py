"""What INT8 adds to the default run (issue 24 item 1): wall time of the export stage with
deploy.precision=int8 against fp32, and of the benchmark with its ort_int8 rows against without them.

Same process, the two settings interleaved (alternating which goes first) over `--rounds` rounds, on the
finetuned models of a finished default run (`--models`, `--data`: a repo's models/ and data/prepared, read
only; everything is written under a temporary folder). Prints per-role seconds and the added cost the
default graph would pay: export added x (roles x train.repeats) + benchmark added.

    nice -n 10 python benchmarks/int8_default_cost.py --models /path/to/repo/models --data /path/to/repo/data/prepared
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

PRECISIONS = ("fp32", "int8")


def _timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def export_seconds(cfg, model: Path, data: Path, work: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds of one export stage (export, parity, [calibration + INT8], artifact evaluation) per precision."""
    from elimnet.pipeline.export_stage import run_export

    out: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for p in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            c = cfg.replace(**{"deploy.precision": p})
            d = work / f"{model.stem}-{p}-{r}"
            secs, res = _timed(lambda: run_export(c, model, data, d / "deploy", d / "export.json",
                                                  role=model.parent.name, progress=False))
            out[p].append(secs)
            acc = res["accuracy"]
            print(f"  {model.parent.name}/{model.name} {p} round {r}: {secs:.1f} s, test macro-F1 "
                  + ", ".join(f"{k} {acc[k]['macro_f1']:.4f}" for k in ("torch", *PRECISIONS) if k in acc),
                  flush=True)
    return out


def benchmark_seconds(cfg, baseline: Path, candidate: Path, work: Path, rounds: int) -> dict[str, list[float]]:
    """Seconds of one benchmark stage per precision (int8 adds the ort_int8 backend's export and timing)."""
    from elimnet.pipeline.benchmark_stage import run_benchmark

    out: dict[str, list[float]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for p in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            c = cfg.replace(**{"deploy.precision": p})
            secs, res = _timed(lambda: run_benchmark(c, baseline, candidate, work / f"latency-{p}-{r}.json"))
            out[p].append(secs)
            print(f"  benchmark {p} round {r}: {secs:.1f} s (backends {', '.join(res['backends'])})", flush=True)
    return out


def _added(secs: dict[str, list[float]]) -> tuple[float, float, float]:
    f, i = statistics.median(secs["fp32"]), statistics.median(secs["int8"])
    return f, i, i - f


def main(argv=None) -> int:
    from elimnet.bench.hardware import cpu_info
    from elimnet.config import load_params
    from elimnet.threads import set_threads

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", type=Path, required=True, help="models/ of a finished default run")
    p.add_argument("--data", type=Path, required=True, help="its data/prepared")
    p.add_argument("--params", default="params.yaml")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="train.repeats of the graph the total is for")
    p.add_argument("--skip-benchmark", action="store_true")
    a = p.parse_args(argv)
    cfg = load_params(a.params)
    set_threads(cfg["train.threads"])
    print(f"CPU: {cpu_info()[0]}; deploy.calibration={cfg['deploy.calibration']}, "
          f"calibration_images={cfg['deploy.calibration_images']}, rounds {a.rounds}", flush=True)
    total = 0.0
    with tempfile.TemporaryDirectory(prefix="int8-cost-") as tmp:
        for role in ("baseline", "candidate"):
            f, i, d = _added(export_seconds(cfg, a.models / role / "r0.pt", a.data, Path(tmp), a.rounds))
            print(f"export {role}: fp32 {f:.1f} s, int8 {i:.1f} s (x{i / f:.2f}), added {d:.1f} s", flush=True)
            total += d * a.repeats
        if not a.skip_benchmark:
            f, i, d = _added(benchmark_seconds(cfg, a.models / "baseline/r0.pt", a.models / "candidate/r0.pt",
                                               Path(tmp), a.rounds))
            print(f"benchmark: fp32 {f:.1f} s, int8 {i:.1f} s (x{i / f:.2f}), added {d:.1f} s", flush=True)
            total += d
    print(f"added to the default graph (2 roles x {a.repeats} repeats of export + the benchmark): {total:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
