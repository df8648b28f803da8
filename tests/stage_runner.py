"""Run the real stage entry points (stages/*.py) in-process, in dvc.yaml's order, with dvc.yaml's own
arguments: every workspace path is moved under a work folder. The graph is read, not re-encoded."""
from __future__ import annotations

import runpy
import shlex
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
# First path components of the pipeline's outputs and inputs that live in the workspace.
_WORKSPACE = ("data", "models", "metrics", "plots", "resolved", "params.yaml", "dvc.lock")


def run_stage_script(name: str, argv: list[str]) -> int:
    from elimnet.pipeline.common import run_stage

    module = runpy.run_path(str(ROOT / "stages" / f"{name}.py"), run_name="stage")
    return run_stage(module["main"], argv)


def default_graph() -> list[tuple[str, str, list[str]]]:
    """[(stage, script name, argv)] from dvc.yaml, foreach stages expanded, in file order (DVC's order)."""
    out = []
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        items = st.get("foreach", [None])
        for item in items:
            cmd = st.get("do", st)["cmd"]
            if item is not None:
                cmd = cmd.replace("${item}", str(item))
            words = shlex.split(cmd)
            script = next(w for w in words if w.startswith("stages/"))
            out.append((name if item is None else f"{name}@{item}", Path(script).stem,
                        words[words.index(script) + 1:]))
    return out


def _move(arg: str, work: Path) -> str:
    return str(work / arg) if arg.split("/")[0] in _WORKSPACE else arg


def run_default_graph(params: Path, work: Path) -> None:
    """The dvc.yaml graph, in order, reading `params` and with every workspace path under `work`."""
    for stage, script, argv in default_graph():
        args = ["--params", str(params), *(_move(a, work) for a in argv)]
        if script == "params":
            args += ["--dvc-yaml", str(ROOT / "dvc.yaml")]
        rc = run_stage_script(script, args)
        assert rc == 0, f"stage {stage} failed"
