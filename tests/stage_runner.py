"""Run the real stage entry points (stages/*.py) in-process, in dvc.yaml's order, with dvc.yaml's own
arguments: every workspace path is moved under a work folder. The graph is read, not re-encoded."""
from __future__ import annotations

import itertools
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


def _values(spec, params: dict) -> list:
    """A foreach/matrix list, or the params.yaml list a `${key}` names (DVC resolves them the same way)."""
    if isinstance(spec, str) and spec.startswith("${"):
        return params[spec[2:-1]]
    return spec


def _items(st: dict, params: dict) -> list[tuple[str | None, dict]]:
    """[(name suffix, {placeholder: value})] of a stage: one plain item, foreach's items or matrix's product."""
    if "foreach" in st:
        return [(str(v), {"${item}": str(v)}) for v in _values(st["foreach"], params)]
    if "matrix" in st:
        keys = list(st["matrix"])
        combos = itertools.product(*(_values(st["matrix"][k], params) for k in keys))
        return [("-".join(map(str, c)), {f"${{item.{k}}}": str(v) for k, v in zip(keys, c)}) for c in combos]
    return [(None, {})]


def default_graph(params_path: Path | None = None) -> list[tuple[str, str, list[str]]]:
    """[(stage, script name, argv)] from dvc.yaml, foreach/matrix stages expanded, in file order (DVC's order)."""
    from elimnet.config import defaults, load_params

    params = (load_params(params_path) if params_path else defaults()).flat()  # never the workspace's file
    out = []
    for name, st in yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"].items():
        for suffix, subs in _items(st, params):
            cmd = st.get("do", st)["cmd"]
            for placeholder, value in subs.items():
                cmd = cmd.replace(placeholder, value)
            words = shlex.split(cmd)
            script = next(w for w in words if w.startswith("stages/"))
            out.append((name if suffix is None else f"{name}@{suffix}", Path(script).stem,
                        words[words.index(script) + 1:]))
    return out


def _move(arg: str, work: Path) -> str:
    return str(work / arg) if arg.split("/")[0] in _WORKSPACE else arg


def run_default_graph(params: Path, work: Path) -> None:
    """The dvc.yaml graph, in order, reading `params` and with every workspace path under `work`."""
    for stage, script, argv in default_graph(params):
        args = ["--params", str(params), *(_move(a, work) for a in argv)]
        if script == "params":
            args += ["--dvc-yaml", str(ROOT / "dvc.yaml")]
        rc = run_stage_script(script, args)
        assert rc == 0, f"stage {stage} failed"


# A tiny folder source and the quickest bench/model settings: what the graph tests run through every stage.
TINY_GRAPH = {"model": {"arch": "efficientnet_lite0", "weights": "none", "elim": 2},
              "bench": {"batch_sizes": [1], "warmup": 1, "repeats": 2, "budget_s": 0.2, "threads": 1, "cuda": False}}


def fruit_folder(imgs: Path, per_class: int = 8) -> Path:
    """An ImageFolder tree of 3 classes x `per_class` small RGB images that differ by class and index."""
    from PIL import Image

    for c, name in enumerate(["apple", "kiwi", "plum"]):
        (imgs / name).mkdir(parents=True)
        for i in range(per_class):
            Image.new("RGB", (40, 36), (90 * c, 60 + 10 * i, 120)).save(imgs / name / f"{i}.png")
    return imgs
