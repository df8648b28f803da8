"""Run the real stage entry points (stages/*.py) in-process, as DVC would run them."""
from __future__ import annotations

import runpy
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_stage_script(name: str, argv: list[str]) -> int:
    from elimnet.pipeline.common import run_stage

    module = runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="stage")
    return run_stage(module["main"], argv)


def run_default_graph(params: Path, work: Path) -> None:
    """The dvc.yaml graph, in order, with every path under `work`."""
    m, d, mod = work / "metrics", work / "data", work / "models"
    p = ["--params", str(params)]
    steps = [
        ("prepare", ["--out", str(d), "--metrics", str(m / "data.json")]),
        ("pretrained", ["--out", str(mod / "pretrained.pt")]),
        ("compress", ["--pretrained", str(mod / "pretrained.pt"), "--data", str(d), "--out",
                      str(mod / "candidate_init.pt"), "--structure", str(m / "structure.json")]),
        ("finetune", ["--role", "baseline", "--init", str(mod / "pretrained.pt"), "--data", str(d), "--out",
                      str(mod / "baseline.pt"), "--history", str(m / "baseline/history.csv"), "--metrics",
                      str(m / "baseline/train.json")]),
        ("finetune", ["--role", "candidate", "--init", str(mod / "candidate_init.pt"), "--data", str(d),
                      "--teacher", str(mod / "baseline.pt"), "--out", str(mod / "candidate.pt"), "--history",
                      str(m / "candidate/history.csv"), "--metrics", str(m / "candidate/train.json")]),
        *[("evaluate", ["--model", str(mod / f"{r}.pt"), "--data", str(d), "--out", str(m / r / "eval.json"),
                        "--predictions", str(m / r / "predictions.csv")]) for r in ("baseline", "candidate")],
        *[("export", ["--role", r, "--model", str(mod / f"{r}.pt"), "--data", str(d), "--out",
                      str(mod / "deploy" / r), "--metrics", str(m / r / "export.json")])
          for r in ("baseline", "candidate")],
        ("benchmark", ["--baseline", str(mod / "baseline.pt"), "--candidate", str(mod / "candidate.pt"),
                       "--out", str(m / "latency.json")]),
        ("report", ["--metrics-dir", str(m), "--out", str(m / "summary.json"), "--plot", str(work / "curves.png"),
                    "--deploy", str(mod / "deploy" / "candidate"), "--data", str(d)]),
    ]
    for name, argv in steps:
        rc = run_stage_script(name, p + argv)
        assert rc == 0, f"stage {name} failed"
