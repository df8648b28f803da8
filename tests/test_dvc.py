"""`dvc repro` in a temporary git repo (HEAD's files) on a generated image folder (`data.name=folder`):
runs the whole graph, is a no-op the second time, leaves `dvc status`/`checkout`/`metrics diff`/`plots show`
quiet, and `dvc exp run -S model.elim=...` reruns only the candidate's stages. A `dvc exp run` that a later
stage would refuse (k, a missing folder, a missing download) fails in `params` and changes nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import GIT_ENV, git_commit_all, hermetic_repo

# One fixed split trained 3 times (not the default 5 folds): the DVC behaviour under test, at 3/5 of the time.
TINY = {"data": {"name": "folder", "image_size": 32, "folds": 0},
        "train": {"epochs": 1, "batch_size": 8, "repeats": 3, "repeat_ids": [0, 1, 2]},
        "bench": {"batch_sizes": [1], "repeats": 3, "warmup": 1, "budget_s": 0.1}}


def _env():
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", **GIT_ENV)
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # stage cmds call `python`
    env.pop("MLFLOW_TRACKING_URI", None)  # the temp repo's params.yaml decides
    return env


def _run(args, cwd, ok=True):
    out = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    if ok:
        assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


def _dvc(*args, cwd):
    return _run([sys.executable, "-m", "dvc", *args], cwd)


def _quiet(out: str) -> None:
    """Nothing a new user would read as a problem."""
    bad = [line for line in out.splitlines() if any(w in line.lower() for w in ("warning", "error", "failed"))
           and "fewer than 20 images" not in line]  # true of this tiny data set, and worth saying
    assert not bad, out


def _image_folder(root: Path) -> Path:
    """Three classes of 8 small PNGs each, told apart by colour."""
    from PIL import Image

    for c, colour in enumerate([(200, 30, 30), (30, 200, 30), (30, 30, 200)]):
        (root / f"class{c}").mkdir()
        for i in range(8):
            Image.new("RGB", (40, 36), tuple(max(0, v - 8 * i) for v in colour)).save(root / f"class{c}" / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    """HEAD's files (not the workspace's: it may hold a user's `dvc exp run` params and outputs) as a fresh
    git repo, without the committed results, on tiny params and a generated image folder."""
    dest = hermetic_repo(tmp_path_factory.mktemp("repo"), exclude=("metrics/", "plots/", "dvc.lock"))
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for group, values in TINY.items():
        params[group].update(values)
    params["data"]["path"] = str(_image_folder(tmp_path_factory.mktemp("images")))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git_commit_all(dest, "tiny")
    return dest


def test_repro_then_noop(repo):
    first = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage 'report'" in first
    assert (repo / "metrics/summary.json").exists() and (repo / "dvc.lock").exists()
    data = json.loads((repo / "metrics/data.json").read_text())
    assert data["source"] == "folder" and data["classes"] == ["class0", "class1", "class2"]
    second = _run([sys.executable, "-m", "dvc", "repro"], repo)
    assert "Running stage" not in second
    assert "Data and pipelines are up to date" in second


def test_unused_search_pipeline_is_silent(repo, tmp_path):
    """The optional search pipeline, never run, adds no warning or error to what a new user types."""
    assert not list(repo.rglob("dvc.yaml"))[1:], "only the default dvc.yaml is in DVC's view"
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "lock", "--allow-empty"], repo)
    status = _dvc("status", cwd=repo)
    assert "Data and pipelines are up to date" in status
    _quiet(status)
    _quiet(_dvc("checkout", cwd=repo))
    _quiet(_dvc("metrics", "diff", cwd=repo))
    plots = _dvc("plots", "show", "-o", str(tmp_path / "html"), cwd=repo)
    assert "failed to load" not in plots and "searched.pt" not in plots and "search.json" not in plots, plots
    assert (tmp_path / "html/index.html").is_file()


def test_plots_show_is_quiet(repo, tmp_path):
    """LayerPrune is off here: its empty importance file draws an empty plot, without a warning."""
    _quiet(_dvc("plots", "show", "-o", str(tmp_path / "html"), cwd=repo))


def test_exp_run_reruns_only_candidate_stages(repo):
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "lock", "--allow-empty"], repo)
    out = _dvc("exp", "run", "-S", "model.elim=3", cwd=repo)
    _quiet(out)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    repeats = TINY["train"]["repeat_ids"]  # each repeat of the candidate reruns, no baseline repeat does
    assert ran == {"params", "compress", *(f"finetune_candidate@{r}" for r in repeats),
                   *(f"{s}@candidate-{r}" for s in ("evaluate", "export") for r in repeats), "benchmark",
                   "report"}, out
    # The experiment's MLflow run: opens as model training, spans the rerun stages, describes its params diff.
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{repo}/mlflow.db")
    exp = client.get_experiment_by_name(yaml.safe_load((repo / "params.yaml").read_text())["mlflow"]["experiment"])
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id], order_by=["attributes.start_time DESC"])
    run = runs[0]
    first_out = (repo / "metrics/structure.json").stat().st_mtime * 1000  # written by compress, the first rerun
    assert run.info.start_time < first_out < run.info.end_time
    note = run.data.tags["mlflow.note.content"]
    assert "DVC experiment **" in note and "| model.elim | 2 | 3 |" in note, note


# ----------------------------------------------------------------------------- a failing run changes nothing
# test_integrity's placeholder repo: every output recorded in dvc.lock, nothing trained (no repro needed).
from test_integrity import OUTS, locked_repo  # noqa: E402,F401 - a fixture


def _failed_exp_run(repo: Path, *overrides: str, env: dict | None = None) -> str:
    """`dvc exp run -S ...` that must fail in the params stage: its one error line; outputs untouched."""
    before = {rel: (repo / rel).read_bytes() for rel in OUTS}
    args = [sys.executable, "-m", "dvc", "exp", "run"] + [a for o in overrides for a in ("-S", o)]
    out = subprocess.run(args, cwd=repo, env={**_env(), **(env or {})}, capture_output=True, text=True, timeout=600)
    assert out.returncode != 0
    errors = [line for line in out.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in out.stderr, out.stderr
    assert "Running stage 'params'" in out.stdout and "Running stage 'prepare'" not in out.stdout, out.stdout
    assert {rel: (repo / rel).read_bytes() for rel in OUTS} == before  # every output keeps its bytes
    return errors[0]


def _status(repo: Path) -> str:
    return subprocess.run(["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout


@pytest.mark.slow
def test_k_beyond_the_candidates_fails_in_params_and_changes_nothing(locked_repo):  # noqa: F811
    """Before: params passed, DVC deleted models/candidate_init.pt and metrics/structure.json, compress said no."""
    line = _failed_exp_run(locked_repo, "model.prune.k=100")
    assert "model.prune.k=100: must be <= 6, the removal candidates" in line
    assert "model.prune.k=0 restored from dvc.lock, no other key differs from dvc.lock" in line
    assert _status(locked_repo) == ""  # params.yaml byte-identical


@pytest.mark.slow
def test_a_good_and_a_bad_override_name_exactly_what_still_differs(locked_repo):  # noqa: F811
    before = (locked_repo / "params.yaml").read_text()
    line = _failed_exp_run(locked_repo, "train.lr=0.02", "model.prune.k=100")
    assert "model.prune.k=0 restored from dvc.lock; still different from dvc.lock: train.lr=0.02 " \
           "(`git checkout params.yaml` puts them back)" in line and "no other key" not in line
    after = (locked_repo / "params.yaml").read_text()
    assert [a for a, b in zip(after.splitlines(), before.splitlines()) if a != b] == ["  lr: 0.02"]
    subprocess.run(["git", "checkout", "params.yaml"], cwd=locked_repo, check=True)


@pytest.mark.slow
def test_missing_folder_fails_in_params_and_restores_both_keys(locked_repo):  # noqa: F811
    line = _failed_exp_run(locked_repo, "data.name=folder", "data.path=/nonexistent")
    assert "data.name=folder, data.path=/nonexistent: data.path must be an existing folder" in line
    assert "data.name=elpv, data.path=null restored from dvc.lock" in line
    assert _status(locked_repo) == ""


@pytest.mark.slow
@pytest.mark.parametrize("override, offline", [
    ("data.name=imagenette", "data.name=elpv runs offline"),
    ("model.arch=timm/convnext_atto", "use model.weights=none, or model.arch=efficientnet_lite0"),
])
def test_a_missing_download_fails_in_params_and_changes_nothing(locked_repo, override, offline):  # noqa: F811
    """Offline (ELIMNET_OFFLINE=1 stands in for a dead network): before, imagenette failed after 30 s with
    data/prepared deleted, and the timm weights after 50 s and 6 retry lines with models/pretrained.pt deleted."""
    line = _failed_exp_run(locked_repo, override, env={"ELIMNET_OFFLINE": "1"})
    assert f"error: {override}" in line and "not cached" in line and offline in line
    assert "restored from dvc.lock" in line
    assert _status(locked_repo) == ""
