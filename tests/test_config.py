"""Params: defaults, -S overrides, one-line errors naming key, value and what is allowed."""
import pytest

from conftest import head_file
from elimnet.config import ConfigError, defaults, load_params, parse_overrides


@pytest.fixture
def params_yaml(tmp_path):
    """The committed params.yaml: the workspace's may hold a user's `dvc exp run -S` values."""
    p = tmp_path / "params.yaml"
    p.write_text(head_file("params.yaml"))
    return p


def test_params_yaml_matches_schema_defaults(params_yaml):
    cfg = load_params(params_yaml)
    assert cfg["model.arch"] == "efficientnet_lite0" and cfg["data.name"] == "elpv"
    assert cfg["bench.batch_sizes"] == [1, 8, 64]


def test_overrides_are_yaml_typed():
    assert parse_overrides(["model.elim=3", "bench.batch_sizes=[1,8]", "data.path=null"]) == {
        "model.elim": 3, "bench.batch_sizes": [1, 8], "data.path": None}


@pytest.mark.parametrize("override,message", [
    ("model.arch=resnet9000", "model.arch=resnet9000: must be one of"),
    ("model.elim=-1", "model.elim=-1: must be an integer >= 0"),
    ("model.elim=2.5", "model.elim=2.5: must be an integer >= 0"),
    ("model.elim=7", "model.elim=7: must be an integer in [0, 6] for arch efficientnet_lite0 (7 stages)"),
    ("data.name=imagenet21k", "data.name=imagenet21k: must be one of"),
    ("data.image_size=8", "data.image_size=8: must be an integer in [16, 1024]"),
    ("train.batch_size=0", "train.batch_size=0: must be an integer >= 1"),
    ("train.lr=0", "train.lr=0: must be a number > 0"),
    ("model.weights=random", "model.weights=random: must be one of imagenet, none"),
])
def test_bad_values_give_one_line(params_yaml, override, message):
    with pytest.raises(ConfigError) as e:
        load_params(params_yaml, [override])
    assert message in str(e.value) and "\n" not in str(e.value)


def test_unknown_key_suggests_close_match():
    with pytest.raises(ConfigError, match="model.elm: unknown parameter; did you mean model.elim"):
        parse_overrides(["model.elm=2"])


def test_defaults_validate():
    assert defaults()["seed"] == 42


def test_suite_passes_with_a_broken_workspace(tmp_path):
    """The params tests, run in a copy of HEAD whose workspace holds what a failed `dvc exp run` can leave:
    a params.yaml with bad values, garbage metrics and a broken mlflow.db."""
    import os
    import subprocess
    import sys

    from conftest import hermetic_repo

    repo = hermetic_repo(tmp_path / "repo")
    (repo / "params.yaml").write_text("model:\n  arch: resnet9000\n  elim: 99\ndata:\n  name: nope\n")
    (repo / "metrics/summary.json").write_text("{not json")
    (repo / "mlflow.db").write_bytes(b"not a database")
    env = dict(os.environ, PYTHONPATH=str(repo / "src"))
    env.pop("PYTEST_ADDOPTS", None)
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/test_config.py",
                          "tests/test_sources.py", "-k", "not broken_workspace and (params or bad_values or taco_default)"],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:]
    assert " passed" in out.stdout and "failed" not in out.stdout


def test_config_imports_no_extension_until_the_schema_is_needed():
    """config.py builds the schema from the leaf elimnet.extensions: importing it loads no compression, backend,
    data source or model family, and its source names none of those packages (not even inside a function body
    for compress/ and bench/)."""
    import ast
    import subprocess
    import sys
    from pathlib import Path

    import elimnet.config

    code = ("import sys, elimnet.config as c; "
            "print(sorted(m for m in sys.modules if m.startswith('elimnet.'))); c.schema(); "
            "print(sorted({m.split('.')[1] for m in sys.modules if m.startswith('elimnet.')}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    # deploy.artifacts is the leaf table of precisions (no torch, no onnx), not an extension
    assert out[0] == ("['elimnet.config', 'elimnet.deploy', 'elimnet.deploy.artifacts', 'elimnet.errors', "
                      "'elimnet.extensions', 'elimnet.fields']")
    assert {"bench", "compress", "data", "models"} <= set(eval(out[1]))  # noqa: S307 - our own print
    tree = ast.parse(Path(elimnet.config.__file__).read_text())
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    imported |= {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    assert not [m for m in imported if m.startswith(("elimnet.compress", "elimnet.bench"))]


def test_extension_params_are_declared_by_their_modules():
    from elimnet import extensions
    from elimnet.config import CORE, schema

    schema()  # discovers every extension
    owners = {k: (e.kind, e.name) for e in extensions.declared() for k in e.params}
    assert owners["bench.ort"] == ("backend", "ort") and owners["bench.amp"] == ("backend", "cuda")
    assert owners["data.variant"] == ("source", "imagenette") and owners["data.taco.mapping"] == ("source", "taco")
    assert owners["model.block"] == ("family", "simple_effnet") and owners["model.elim"] == ("compression", "elim")
    assert not set(owners) & set(CORE) and set(owners) | set(CORE) == set(schema())


def test_family_and_source_cross_checks_run_from_their_modules():
    assert defaults(["model.arch=simple_effnet", "model.block=se", "model.weights=none"])["model.arch"] == \
        "simple_effnet_se"
    with pytest.raises(ConfigError, match=r"^model\.block=se: must be standard for arch resnet18 \(block variants "
                                          r"exist for simple_effnet, simple_effnet_condconv, simple_effnet_se\)$"):
        defaults(["model.arch=resnet18", "model.block=se"])
    with pytest.raises(ConfigError, match=r"^data\.path=null: must name an ImageFolder directory when data\.name=folder"):
        defaults(["data.name=folder"])
