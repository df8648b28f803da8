"""params: validate params.yaml once, before any other stage can delete an output.

Every stage of dvc.yaml depends on `resolved/<stage>.json`, written here: the resolved values of
the params that stage lists. So DVC runs this stage first; a bad value fails it while every other
output is still in place, and a file changes only when its stage's values change (so
`-S model.elim=3` still reruns only the candidate's stages).

A bad value that `dvc exp run -S` wrote into params.yaml is put back to the value dvc.lock last ran
with, so the failed command leaves params.yaml as it was.
"""
from __future__ import annotations

import re
from pathlib import Path

import yaml

from elimnet.config import load_params, schema
from elimnet.dvc_files import locked_value as _locked_value, stage_params
from elimnet.dvc_files import resolved_values
from elimnet.errors import ConfigError
from elimnet.io import read_json, write_json


def _bad_keys(err: ConfigError) -> list[str]:
    head = str(err).split(":")[0]
    return [k for k in re.findall(r"[a-z_][\w.]*", head) if k in schema()]


def _restore(params_path: Path, lock: Path, err: ConfigError) -> str:
    """Put each bad key back to its dvc.lock value; return what was done, for the error line."""
    from dvc.utils.serialize import modify_yaml  # DVC's own round-trip writer: comments and layout stay

    done, missing = [], []
    for key in _bad_keys(err):
        found, value = _locked_value(lock, key)
        if not found:
            missing.append(key)
            continue
        with modify_yaml(params_path) as tree:
            node = tree
            *parents, leaf = key.split(".")
            for p in parents:
                node = node[p]
            if node.get(leaf) == value:
                continue
            node[leaf] = value
        done.append(f"{key}={yaml.safe_dump(value, default_flow_style=True).strip().removesuffix('...').strip()}")
    if done:
        return f"; {params_path} restored to the values dvc.lock ran with ({', '.join(done)}), nothing else changed"
    if missing:
        return f"; fix {', '.join(missing)} in {params_path} (or `git checkout {params_path}`)"
    return ""


def run_params_check(params_path: str | Path, overrides: list[str], dvc_yaml: str | Path, lock: str | Path,
                     out_dir: str | Path, restore: bool = True) -> dict[str, dict]:
    params_path, out_dir = Path(params_path), Path(out_dir)
    if not params_path.exists():
        raise ConfigError(f"--params {params_path}: no such file (the pipeline reads its params from one)")
    try:
        cfg = load_params(params_path, overrides)
    except ConfigError as e:
        if restore and not overrides and params_path.exists():
            raise ConfigError(f"{e}{_restore(params_path, Path(lock), e)}") from None
        raise
    written = {}
    for stage, keys in stage_params(dvc_yaml).items():
        values = resolved_values(cfg, keys)
        path = out_dir / f"{stage}.json"
        # Rewrite only on change: an untouched file keeps its mtime, and its hash anyway.
        if not path.exists() or read_json(path) != values:
            write_json(path, values)
        written[stage] = values
    return written
