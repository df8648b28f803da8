"""`dvc repro` in a temporary git repo on a generated image folder (`data.name=folder`): runs the
whole graph, is a no-op the second time, and `dvc exp run -S model.elim=...` reruns only the
candidate's stages."""
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
TINY = {"data": {"name": "folder", "image_size": 32}, "train": {"epochs": 1, "batch_size": 8},
        "bench": {"batch_sizes": [1], "repeats": 3, "warmup": 1, "budget_s": 0.1}}


def _env():
    env = dict(os.environ, DVC_NO_ANALYTICS="1", MLFLOW_DISABLE_TELEMETRY="true", GIT_AUTHOR_NAME="t",
               GIT_AUTHOR_EMAIL="t@t", GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]  # stage cmds call `python`
    return env


def _run(args, cwd):
    out = subprocess.run(args, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, f"{' '.join(args)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout + out.stderr


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
    """A copy of this checkout's files (tracked + untracked, not ignored) as a fresh git repo."""
    dest = tmp_path_factory.mktemp("repo")
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("metrics/", "plots/")) and rel != "dvc.lock":
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    params = yaml.safe_load((dest / "params.yaml").read_text())
    for group, values in TINY.items():
        params[group].update(values)
    params["data"]["path"] = str(_image_folder(tmp_path_factory.mktemp("images")))
    (dest / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(["git", "init", "-q"], dest)
    _run(["git", "add", "-A"], dest)
    _run(["git", "commit", "-qm", "tiny"], dest)
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
    # The default pipeline only: search/dvc.yaml is optional and stays unrun.
    status = _run([sys.executable, "-m", "dvc", "status", "dvc.yaml"], repo)
    assert "up to date" in status


def test_exp_run_reruns_only_candidate_stages(repo):
    _run(["git", "add", "-A"], repo)
    _run(["git", "commit", "-qm", "lock"], repo)
    out = _run([sys.executable, "-m", "dvc", "exp", "run", "-S", "model.elim=3"], repo)
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"params", "compress", "finetune_candidate", "evaluate@candidate", "benchmark", "report"}, out
