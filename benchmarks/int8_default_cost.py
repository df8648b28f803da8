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


def _timed(fn) -> tuple[tuple[float, float], object]:
    """((wall s, this process's CPU s), fn's result). CPU seconds are what a busy shared machine distorts least:
    other jobs stretch the wall time, not the work done; divided by the threads they estimate an idle wall time."""
    t0, c0 = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - t0, time.process_time() - c0), out


def export_seconds(cfg, model: Path, data: Path, work: Path, rounds: int) -> dict[str, list[tuple]]:
    """Seconds of one export stage (export, parity, [calibration + INT8], artifact evaluation) per precision."""
    from elimnet.pipeline.export_stage import run_export

    out: dict[str, list[tuple]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for p in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            c = cfg.replace(**{"deploy.precision": p})
            d = work / f"{model.stem}-{p}-{r}"
            secs, res = _timed(lambda: run_export(c, model, data, d / "deploy", d / "export.json",
                                                  role=model.parent.name, progress=False))
            out[p].append(secs)
            acc = res["accuracy"]
            print(f"  {model.parent.name}/{model.name} {p} round {r}: {secs[0]:.1f} s wall, {secs[1]:.1f} s CPU, "
                  f"test macro-F1 "
                  + ", ".join(f"{k} {acc[k]['macro_f1']:.4f}" for k in ("torch", *PRECISIONS) if k in acc),
                  flush=True)
    return out


def benchmark_seconds(cfg, baseline: Path, candidate: Path, work: Path, rounds: int) -> dict[str, list[tuple]]:
    """Seconds of one benchmark stage per precision (int8 adds the ort_int8 backend's export and timing)."""
    from elimnet.pipeline.benchmark_stage import run_benchmark

    out: dict[str, list[tuple]] = {p: [] for p in PRECISIONS}
    for r in range(rounds):
        for p in (PRECISIONS if r % 2 == 0 else PRECISIONS[::-1]):
            c = cfg.replace(**{"deploy.precision": p})
            secs, res = _timed(lambda: run_benchmark(c, baseline, candidate, work / f"latency-{p}-{r}.json"))
            out[p].append(secs)
            print(f"  benchmark {p} round {r}: {secs[0]:.1f} s wall, {secs[1]:.1f} s CPU "
                  f"(backends {', '.join(res['backends'])})", flush=True)
    return out


def _added(secs: dict[str, list[tuple]], what: str) -> dict[str, float]:
    """Medians per precision and the added seconds, wall and CPU; prints one line."""
    med = {p: [statistics.median(s[k] for s in secs[p]) for k in (0, 1)] for p in PRECISIONS}
    added = {"wall": med["int8"][0] - med["fp32"][0], "cpu": med["int8"][1] - med["fp32"][1]}
    print(f"{what}: fp32 {med['fp32'][0]:.1f} s wall / {med['fp32'][1]:.1f} s CPU, int8 {med['int8'][0]:.1f} s wall / "
          f"{med['int8'][1]:.1f} s CPU; added {added['wall']:.1f} s wall, {added['cpu']:.1f} s CPU", flush=True)
    return added


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
    p.add_argument("--roles", nargs="+", default=["baseline", "candidate"])
    p.add_argument("-S", "--set", action="append", default=[], metavar="KEY=VALUE",
                   help="param override, e.g. -S deploy.calibration=minmax")
    a = p.parse_args(argv)
    cfg = load_params(a.params, a.set)
    set_threads(cfg["train.threads"])
    print(f"CPU: {cpu_info()[0]}; deploy.calibration={cfg['deploy.calibration']}, "
          f"calibration_images={cfg['deploy.calibration_images']}, rounds {a.rounds}", flush=True)
    total = {"wall": 0.0, "cpu": 0.0}
    with tempfile.TemporaryDirectory(prefix="int8-cost-") as tmp:
        for role in a.roles:
            added = _added(export_seconds(cfg, a.models / role / "r0.pt", a.data, Path(tmp), a.rounds),
                           f"export {role}")
            for k in total:  # one role measured: both roles assumed alike
                total[k] += added[k] * a.repeats * (2 if len(a.roles) == 1 else 1)
        if not a.skip_benchmark:
            added = _added(benchmark_seconds(cfg, a.models / "baseline/r0.pt", a.models / "candidate/r0.pt",
                                             Path(tmp), a.rounds), "benchmark")
            for k in total:
                total[k] += added[k]
    print(f"added to the default graph (2 roles x {a.repeats} repeats of export"
          f"{'' if a.skip_benchmark else ' + the benchmark'}): {total['wall']:.0f} s wall, {total['cpu']:.0f} s CPU")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
