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
