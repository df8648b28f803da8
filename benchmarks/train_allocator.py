"""Training img/s with and without keep_freed_memory (train.keep_freed_memory), in alternating fresh processes.

glibc's setting is process-wide and cannot be undone, so each measurement is its own process: rounds of
(on, off) or (off, on), alternating which goes first, the real finetune loop (train_epoch) on elpv images.
Prints each process's img/s and the per-round on/off ratio (median and range).

    nice -n 10 python benchmarks/train_allocator.py [--rounds 4] [--steps 10] [--image-size 96] [--threads 1]
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def child(keep: bool, image_size: int, batch_size: int, steps: int, threads: int | None) -> None:
    from elimnet.bench.allocator import allocator_state

    state = allocator_state(keep)  # first, before any tensor is allocated
    import torch
    if threads:
        torch.set_num_threads(threads)
    from train_throughput import bench_loop

    from elimnet.data.elpv import elpv_source
    from elimnet.data.prepare import decode
    from elimnet.data.tensors import TensorSplit
    from elimnet.models import get_spec
    from elimnet.train.finetune import TrainRecipe

    source = elpv_source()
    x, y, _ = decode(source.samples[:batch_size * (steps + 2)], image_size, source.channels, "decode")
    spec = get_spec("efficientnet_lite0")
    recipe = TrainRecipe.from_config(None, batch_size=batch_size)
    ips = bench_loop("efficientnet_lite0", TensorSplit(x, y), recipe, spec.mean, spec.std, steps)
    print(f"RESULT {ips:.3f} {torch.get_num_threads()} {state}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--image-size", type=int, default=96)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        child(a.child == "on", a.image_size, a.batch_size, a.steps, a.threads)
        return
    runs: dict[str, list[float]] = {"on": [], "off": []}
    ratios = []
    for r in range(a.rounds):
        got = {}
        for mode in (("on", "off") if r % 2 == 0 else ("off", "on")):
            out = subprocess.run([sys.executable, __file__, "--child", mode, "--steps", str(a.steps),
                                  "--image-size", str(a.image_size), "--batch-size", str(a.batch_size),
                                  *(["--threads", str(a.threads)] if a.threads else [])],
                                 capture_output=True, text=True, check=True).stdout
            line = next(l for l in out.splitlines() if l.startswith("RESULT"))
            _, ips, threads, *state = line.split()
            got[mode] = float(ips)
            runs[mode].append(float(ips))
            print(f"round {r + 1} {mode:3s}: {float(ips):7.1f} img/s ({threads} threads, allocator: {' '.join(state)})",
                  flush=True)
        ratios.append(got["on"] / got["off"])
    for mode, v in runs.items():
        print(f"keep_freed_memory {mode:3s}: median {statistics.median(v):.1f} img/s, range {min(v):.1f}-{max(v):.1f}")
    print(f"on/off ratio: median {statistics.median(ratios):.2f}x, range {min(ratios):.2f}-{max(ratios):.2f}x "
          f"over {len(ratios)} rounds")


if __name__ == "__main__":
    main()
