"""Pipeline integrity: DVC deps cover the code each stage runs, identical weights give identical bytes,
a bad `-S` fails before any output is touched, and every user-facing failure is one line."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from elimnet.checkpoint import model_config, save_model
from elimnet.config import defaults
from elimnet.models import create_model

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "src" / "elimnet"


# ----------------------------------------------------------------------------- import closure
def _module_file(name: str) -> Path | None:
    rel = Path(*name.split("."))
    for cand in (ROOT / "src" / rel.with_suffix(".py"), ROOT / "src" / rel / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _imports(path: Path) -> set[str]:
    """Every elimnet module a file imports, at module level or inside functions."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("elimnet")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("elimnet"):
            found.add(node.module)
            found |= {f"{node.module}.{a.name}" for a in node.names}  # `from pkg import module`
    mods = set()
    for name in found:
        parts = name.split(".")
        for i in range(2, len(parts) + 1):  # a module imports its parent packages' __init__ too
            mods.add(".".join(parts[:i]))
    if "import_package_modules(__name__, __path__)" in path.read_text():  # a package that imports all its modules
        pkg = ".".join(path.relative_to(ROOT / "src").with_suffix("").parts[:-1])
        mods |= {f"{pkg}.{p.stem}" for p in path.parent.glob("*.py") if p.stem != "__init__"}
    for node in tree.body:  # elimnet.extensions imports these packages by name when the schema is built
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "EXTENSION_PACKAGES" for t in node.targets):
            mods |= set(ast.literal_eval(node.value))
    return mods


def import_closure(script: Path) -> set[Path]:
    todo, seen, files = [script], set(), set()
    while todo:
        f = todo.pop()
        for mod in _imports(f):
            if mod in seen:
                continue
            seen.add(mod)
            path = _module_file(mod)
            if path is not None:
                files.add(path)
                todo.append(path)
    return files


def _stages() -> dict[str, dict]:
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    return {name: st.get("do", st) for name, st in stages.items()}


@pytest.mark.parametrize("stage", sorted(_stages()))
def test_dvc_deps_cover_the_import_closure_of_each_stage(stage):
    body = _stages()[stage]
    script = ROOT / next(w for w in body["cmd"].split() if w.startswith("stages/"))
    deps = [ROOT / d for d in body["deps"]]
    assert script in deps, f"{stage}: its script {script.name} is not a dep"
    closure = import_closure(script)
    assert len(closure) > 5  # the walk itself works: every stage runs config, errors, io ...
    missing = sorted(str(f.relative_to(ROOT)) for f in closure
                     if not any(f == d or d in f.parents for d in deps))
    assert not missing, f"stage {stage}: dvc.yaml deps miss code it runs: {missing}"


def test_closure_walk_follows_function_level_imports():
    # config imports the model registry inside a function; the walk must still see it.
    closure = import_closure(ROOT / "stages" / "prepare.py")
    assert PKG / "models" / "registry.py" in closure and PKG / "data" / "tensors.py" in closure
    assert PKG / "compress" / "diet.py" in closure  # config -> extensions -> compress/__init__'s discovery
    assert PKG / "bench" / "backends" / "ort.py" in closure and PKG / "data" / "taco.py" in closure


# ----------------------------------------------------------------------------- byte stability
def test_identical_weights_give_identical_model_files(tmp_path):
    torch.manual_seed(0)
    model = create_model("resnet18", pretrained=False)
    config = model_config("resnet18", steps=[], weights="none", num_classes=1000)
    save_model(tmp_path / "a.pt", model, config)
    save_model(tmp_path / "sub" / "b.pt", model, config)  # another name and folder: the same bytes
    a, b = (tmp_path / "a.pt").read_bytes(), (tmp_path / "sub" / "b.pt").read_bytes()
    assert a == b and len(a) > 40_000_000
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temp file left behind


# ----------------------------------------------------------------------------- params
def test_params_yaml_survives_dvcs_round_trip_unchanged(tmp_path):
    """DVC rewrites params.yaml on `-S`; a file already in its form shows no diff but the changed value."""
    from dvc.utils.serialize import modify_yaml

    from conftest import head_file

    copy = tmp_path / "params.yaml"
    copy.write_text(head_file("params.yaml"))  # as committed: the workspace's may hold a user's -S values
    with modify_yaml(copy) as tree:
        tree["model"]["elim"] = tree["model"]["elim"]
    assert copy.read_text() == head_file("params.yaml")


def _env():
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    env.pop("ELIMNET_DEBUG", None)
    return env


def _run(args, cwd, check=True):
    out = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, f"{' '.join(map(str, args))}:\n{out.stdout[-2000:]}\n{out.stderr[-2000:]}"
    return out


# locked_repo's params.yaml is the schema's defaults: dvc.yaml's foreach stages run over their repeat_ids
REPEATS = [(role, r) for role in ("baseline", "candidate") for r in defaults()["train.repeat_ids"]]
OUTS = ["data/prepared/train.pt", "models/pretrained.pt", "models/candidate_init.pt",
        *(f"models/{role}/r{r}.pt" for role, r in REPEATS), *(f"models/deploy/{role}/r{r}/model.onnx"
                                                              for role, r in REPEATS), "plots/curves.png"]


@pytest.fixture(scope="module")
def locked_repo(tmp_path_factory):
    """This project's tracked code and dvc.yaml in a fresh git repo, every output a placeholder recorded
    in dvc.lock by `dvc commit` (nothing trained), and params.yaml written from the schema's defaults."""
    from dvc.utils.serialize import dump_yaml

    dest = tmp_path_factory.mktemp("locked")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and rel.split("/")[0] in ("src", "stages", ".dvc") or rel in ("dvc.yaml", ".dvcignore"):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    dump_yaml(dest / "params.yaml", defaults().nested())  # DVC's own writer: stable under `-S`
    for rel in OUTS:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_bytes(f"placeholder {rel}".encode())
    _run([sys.executable, "stages/params.py"], dest)
    for rel in ("metrics/data.json", "metrics/structure.json", "metrics/layer_importance.json",
                "metrics/block_latency.json", "metrics/headline.json", "metrics/latency.json", "metrics/summary.json",
                *(f"metrics/{role}/r{r}/{f}.json" for role, r in REPEATS for f in ("export", "train", "eval"))):
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        (dest / rel).write_text("{}\n")
    for rel in (f"metrics/{role}/r{r}/{f}.csv" for role, r in REPEATS for f in ("history", "predictions")):
        (dest / rel).write_text("epoch\n1\n")
    _run(["git", "init", "-q"], dest)
    _run([sys.executable, "-m", "dvc", "commit", "-f", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "locked"], dest)
    assert "up to date" in _run([sys.executable, "-m", "dvc", "status"], dest).stdout
    return dest


@pytest.mark.slow
@pytest.mark.parametrize("override, expected", [
    ("model.elim=9", "model.elim=9: must be an integer in [0, 6] for arch efficientnet_lite0 (7 stages)"),
    ("bench.batch_sizes=[]", "bench.batch_sizes=[]: must be a non-empty list of integers >= 1"),
])
def test_bad_override_fails_before_any_output_is_touched(locked_repo, override, expected):
    before = {rel: (locked_repo / rel).read_bytes() for rel in OUTS}
    out = _run([sys.executable, "-m", "dvc", "exp", "run", "-S", override], locked_repo, check=False)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and expected in errors[0] and "restored" in errors[0], out.stderr
    assert "Traceback" not in out.stderr
    assert {rel: (locked_repo / rel).read_bytes() for rel in OUTS} == before  # every output in place
    status = _run(["git", "status", "--porcelain"], locked_repo).stdout
    assert status == "", status  # params.yaml as it was before the command


# ----------------------------------------------------------------------------- one-line errors
def _stage(name: str, argv: list[str], env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / f"{name}.py"), *argv], capture_output=True,
                          text=True, timeout=300, env={**_env(), **(env or {})}, cwd=ROOT)


def _one_line(r: subprocess.CompletedProcess, code: int = 2) -> str:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code and len(lines) == 1 and lines[0].startswith("error: "), r.stderr
    return lines[0]


class _Payload:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt")
    torch.manual_seed(0)
    save_model(d / "ok.pt", create_model("resnet18", pretrained=False),
               model_config("resnet18", steps=[], weights="none", num_classes=1000))
    return d / "ok.pt"


@pytest.mark.parametrize("damage", ["truncated", "tampered", "wrong_arch", "not_torch"])
def test_damaged_model_file_is_one_line(saved_model, tmp_path, damage):
    bad = tmp_path / "bad.pt"
    data = saved_model.read_bytes()
    if damage == "truncated":
        bad.write_bytes(data[: len(data) // 2])
    elif damage == "tampered":  # a pickle that would run code: refused by weights_only
        torch.save({"config": {"arch": "resnet18"}, "state_dict": _Payload()}, bad)
    elif damage == "wrong_arch":
        ckpt = torch.load(saved_model, weights_only=True)
        ckpt["config"]["arch"] = "resnet34"
        torch.save(ckpt, bad)
    else:
        bad.write_text("hello")
    r = _stage("evaluate", ["--params", os.devnull, "--model", str(bad), "--data", str(tmp_path / "none"),
                            "--out", str(tmp_path / "e.json"), "--predictions", str(tmp_path / "p.csv")])
    line = _one_line(r)
    assert str(bad) in line and "rerun the stage that writes it" in line and "pwned" not in r.stdout
    assert not (tmp_path / "e.json").exists()


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text("seed: 1\nmodel:\n  elim: [2\n  neck: 0\n")
    line = _one_line(_stage("params", ["--params", str(p), "--dvc-yaml", str(ROOT / "dvc.yaml"),
                                       "--out", str(tmp_path / "resolved")]))
    assert f"{p}:4:" in line and "YAML syntax error" in line
    assert not (tmp_path / "resolved").exists()


def test_missing_params_file_is_refused(tmp_path):
    line = _one_line(_stage("params", ["--params", str(tmp_path / "nope.yaml"), "--out", str(tmp_path / "r")]))
    assert f"--params {tmp_path / 'nope.yaml'}: no such file" in line


@pytest.mark.parametrize("text, expected", [
    ("train:\n  lr: 1e-3\n", None),  # YAML 1.2 float, as DVC reads it
    ("train:\n  hflip: yes\n", "train.hflip='yes': must be true or false"),
    ("train:\n  hflip: on\n", "train.hflip='on': must be true or false"),
])
def test_params_yaml_scalars_follow_yaml_1_2(tmp_path, text, expected):
    from elimnet.config import load_params
    from elimnet.errors import ConfigError

    p = tmp_path / "params.yaml"
    p.write_text(text)
    if expected is None:
        assert load_params(p)["train.lr"] == 0.001
    else:
        with pytest.raises(ConfigError, match=expected.replace("[", r"\[")):
            load_params(p)


def test_interrupt_is_one_line_exit_130_and_debug_shows_the_traceback(tmp_path):
    code = ("import sys\nfrom elimnet.pipeline.common import run_stage\n"
            "def main(argv):\n    raise KeyboardInterrupt\nsys.exit(run_stage(main, []))\n")
    script = tmp_path / "s.py"
    script.write_text(code)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=_env(), timeout=120)
    assert "interrupted" in _one_line(r, code=130)
    r = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                       env={**_env(), "ELIMNET_DEBUG": "1"})
    assert "Traceback" in r.stderr and "KeyboardInterrupt" in r.stderr


# ----------------------------------------------------------------------------- the schema and the registries
def test_committed_params_yaml_matches_the_schema_key_for_key():
    """The params.yaml a clone gets (git HEAD, not the workspace's) lists every key, with its default."""
    from elimnet.config import flatten, schema, yaml_load

    text = subprocess.run(["git", "show", "HEAD:params.yaml"], cwd=ROOT, capture_output=True, text=True,
                          check=True).stdout
    flat = flatten(yaml_load(text))
    assert sorted(flat) == sorted(schema())
    differ = {k: (v, schema()[k].default) for k, v in flat.items() if v != schema()[k].default}
    assert not differ, f"params.yaml values that are not the schema's defaults: {differ}"


# One toy module per extension point: the file a user adds, as docs/extending.md shows it.
TOY_MODULES = {
    "compression": ("src/elimnet/compress/toy.py", """
from torch import nn

from elimnet.compress.base import register_transform
from elimnet.fields import Field, int_range


def plan(model, cfg, ctx):
    return {"n": cfg["model.toy.n"]} if cfg["model.toy.n"] else None


def apply(model, n):
    model.toy = nn.Identity()  # a visible change
    return model, {"n": n}


register_transform("toy", plan, apply, order=99, off={"model.toy.n": 0}, label=lambda p: f"Toy {p['model.toy.n']}",
                   params={"model.toy.n": Field(0, int_range(0), "a toy compression")})
"""),
    "backend": ("src/elimnet/bench/backends/toy.py", """
import contextlib

from elimnet.bench.backends import register_backend, switched_off
from elimnet.fields import Field, is_bool


@contextlib.contextmanager
def prepare(models, cfg, image_size, threads, workdir, prof):
    from elimnet.bench.latency import torch_runner

    yield lambda x: {n: torch_runner(m, x) for n, m in models.items()}


register_backend("toy", prepare, device="cpu", order=99, unavailable=switched_off("bench.toy"),
                 params={"bench.toy": Field(False, is_bool, "also time the toy backend")})
"""),
    "criterion": ("src/elimnet/compress/toy_order.py", """
from elimnet.compress.criteria import Criterion, register_criterion
from elimnet.fields import Field, num_range


def score(req):
    return {p: float(i) for i, p in enumerate(req.paths)}, {}  # the earliest block matters least


register_criterion(Criterion("toy_order", (), "a toy criterion: depth order", score),
                   params={"model.prune.toy_order.scale": Field(1.0, num_range(0.0, lo_open=True), "toy scale")})
"""),
    "source": ("src/elimnet/data/toy_source.py", """
from PIL import Image

from elimnet.data.sources import Sample, SourceData, register_source
from elimnet.fields import Field, int_range


@register_source("toy", params={"data.toy.classes": Field(2, int_range(2, 8), "toy source: classes")})
def toy_source(cfg):
    n = cfg["data.toy.classes"]
    samples = [Sample(lambda c=c: Image.new("RGB", (8, 8), (60 * c, 0, 0)), c, f"toy/{c}/{i}")
               for c in range(n) for i in range(10)]
    return SourceData("toy", [f"class{c}" for c in range(n)], samples)
"""),
    "family": ("src/elimnet/models/toy_family.py", """
from torch import nn

from elimnet.fields import Field, int_range
from elimnet.models.registry import register_family, register_model
from elimnet.models.staged import StagedNet

register_family("toy", params={"model.toy_net.width": Field(8, int_range(1, 64), "toy family: channels")})


@register_model("toy_net", family="toy", num_stages=2,
                meta={"arch_args": True, "params": {"width": "model.toy_net.width"}})
def toy_net(width: int = 8) -> StagedNet:
    def block():
        return nn.Sequential(nn.Conv2d(width, width, 3, padding=1), nn.ReLU())
    return StagedNet(nn.Conv2d(3, width, 3, padding=1), [nn.Sequential(block(), block()), nn.Sequential(block())],
                     nn.Identity(), nn.Sequential(nn.Linear(width, 1000)))
"""),
}
# The params.yaml lines each adds, and the stage params it lists in dvc.yaml (none where its section is listed).
TOY_PARAMS = {"compression": {"model.toy.n": 0}, "backend": {"bench.toy": False},
              "criterion": {"model.prune.toy_order.scale": 1.0}, "source": {"data.toy.classes": 2},
              "family": {"model.toy_net.width": 8}}
TOY_DVC_PARAMS = {"compression": ("compress", "model.toy"), "family": ("pretrained", "model.toy_net")}

# Run in the clone: each toy is in the schema and used where its kind is consumed.
TOY_CHECKS = """
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from elimnet.config import ConfigError, defaults, flatten, load_params, schema, yaml_load
from elimnet.compress import build
from elimnet.report.aggregate import method_label

flat = flatten(yaml_load(Path("params.yaml").read_text()))
assert sorted(flat) == sorted(schema()), set(flat) ^ set(schema())
load_params("params.yaml")
kind = sys.argv[1]
if kind == "compression":
    cfg = defaults(["model.arch=resnet18", "model.weights=none", "model.elim=1", "model.toy.n=3"])
    with pytest.raises(ConfigError, match="model.toy.n=-1: must be an integer >= 0"):
        defaults(["model.toy.n=-1"])
    candidate, steps, full = build.build_from_params(cfg, num_classes=3)
    assert [s["name"] for s in steps] == ["classifier", "elim", "toy"]
    assert hasattr(candidate, "toy") and not hasattr(full, "toy")  # the full twin has it switched off
    assert method_label(cfg.flat(), {}) == "empty Elim 1 + Toy 3"  # weights=none
elif kind == "backend":
    from elimnet.bench.benchmark import benchmark_models

    nets = {n: nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten()).eval() for n in ("baseline", "candidate")}
    fast = ["bench.warmup=1", "bench.repeats=3", "bench.budget_s=0.05", "bench.threads=1", "bench.batch_sizes=[1]"]
    off = benchmark_models(nets, defaults(fast), 8, progress=False)
    assert off["toy"] is None and off["unavailable"]["toy"] == "bench.toy=false"
    on = benchmark_models(nets, defaults([*fast, "bench.toy=true"]), 8, progress=False)
    assert on["backends"][-1] == "toy" and on["toy"]["1"]["candidate"]["repeats"] >= 3
elif kind == "criterion":
    with pytest.raises(ConfigError, match="model.prune.toy_order.scale=0: must be a number > 0"):
        defaults(["model.prune.toy_order.scale=0"])
    cfg = defaults(["model.arch=resnet18", "model.weights=none", "model.elim=0", "model.prune.k=1",
                    "model.prune.criterion=toy_order"])
    from elimnet.compress.layerprune import candidates

    candidate, steps, full = build.build_from_params(cfg, num_classes=3)
    spec = next(s["spec"] for s in steps if s["name"] == "layerprune")
    assert spec["removed"] == [candidates(full)[0].path], spec["removed"]  # the toy scores the first one lowest
elif kind == "source":
    from elimnet.data import load_source
    from elimnet.data.prepare import load_prepared, prepare

    cfg = defaults(["data.name=toy", "data.toy.classes=3"])
    out = Path(sys.argv[2])  # an empty folder
    prepare(load_source(cfg), out, image_size=16, val_fraction=0.2, test_fraction=0.2, split_seed=0)
    splits = load_prepared(out)
    assert sum(len(s) for s in splits.values()) == 30 and sorted(set(splits["train"].labels.tolist())) == [0, 1, 2]
elif kind == "family":
    cfg = defaults(["model.arch=toy_net", "model.weights=none", "model.toy_net.width=6", "model.elim=1"])
    candidate, steps, full = build.build_from_params(cfg, num_classes=3)
    assert candidate.stem.out_channels == 6 and len(candidate.stages) == 1 and len(full.stages) == 2
    assert candidate(torch.zeros(1, 3, 16, 16)).shape == (1, 3)
print("ok", kind)
"""


def _add_toy_params(repo: Path, kind: str) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    for key, value in TOY_PARAMS[kind].items():
        *parents, leaf = key.split(".")
        node = params
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    if kind in TOY_DVC_PARAMS:
        stage, key = TOY_DVC_PARAMS[kind]
        dvc = yaml.safe_load((repo / "dvc.yaml").read_text())
        dvc["stages"][stage]["params"].append(key)
        (repo / "dvc.yaml").write_text(yaml.safe_dump(dvc, sort_keys=False))


@pytest.mark.parametrize("kind", sorted(TOY_MODULES))
def test_a_new_extension_is_one_module_plus_params(tmp_path, kind):
    """Each extension point (compression, backend, criterion, data source, model family): a toy module dropped
    into its package plus its params.yaml lines (and dvc.yaml's stage params where the stage lists keys) is
    found, validated, switched off by default and usable where it is consumed, with no other file edited."""
    from conftest import hermetic_repo

    repo = hermetic_repo(tmp_path / "repo", exclude=("reports/", "docs/", "metrics/", "benchmarks/"))
    path, source = TOY_MODULES[kind]
    (repo / path).write_text(source.lstrip())
    _add_toy_params(repo, kind)
    changed = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"], cwd=repo, capture_output=True,
                             text=True, check=True).stdout.split("\n")
    files = sorted(line[3:] for line in changed if line)
    expected = sorted([path, "params.yaml"] + (["dvc.yaml"] if kind in TOY_DVC_PARAMS else []))
    assert files == expected and len(files) <= 3
    (tmp_path / "checks.py").write_text(TOY_CHECKS)
    (tmp_path / "prepared").mkdir()
    r = subprocess.run([sys.executable, str(tmp_path / "checks.py"), kind, str(tmp_path / "prepared")], cwd=repo, capture_output=True, text=True,
                       timeout=300, env={**_env(), "PYTHONPATH": str(repo / "src")})
    assert r.returncode == 0 and r.stdout.strip().endswith(f"ok {kind}"), r.stderr[-3000:]
