"""params: validate params.yaml once, before any other stage can delete an output.

Every stage of dvc.yaml depends on `resolved/<stage>.json`, written here: the resolved values of
the params that stage lists. So DVC runs this stage first; a bad value fails it while every other
output is still in place, and a file changes only when its stage's values change (so
`-S model.elim=3` still reruns only the candidate's stages).

The checks that need the arch or the file system (elimnet.preflight: LayerPrune's k, data paths,
network inputs) run here too. A key at fault that `dvc exp run -S` wrote into params.yaml is put back
to the value dvc.lock last ran with, by editing its line only (the rest of the file keeps its bytes),
and the error names every other key that still differs from dvc.lock.
"""
from __future__ import annotations

from pathlib import Path

from elimnet.config import load_params
from elimnet.dvc_files import resolved_values, stage_params
from elimnet.errors import ConfigError, ElimnetError
from elimnet.io import read_json, write_json
from elimnet.params_file import restore_message, stale_stages
from elimnet.preflight import run_preflight


def run_params_check(params_path: str | Path, overrides: list[str], dvc_yaml: str | Path, lock: str | Path,
                     out_dir: str | Path, restore: bool = True) -> dict[str, dict]:
    params_path, out_dir = Path(params_path), Path(out_dir)
    if not params_path.exists():
        raise ConfigError(f"--params {params_path}: no such file (the pipeline reads its params from one)")
    try:
        cfg = load_params(params_path, overrides)
        # What a later stage would refuse, refused while every output is in place.
        run_preflight(cfg, stale_stages=stale_stages(cfg, dvc_yaml, Path(lock)))
    except ElimnetError as e:
        if restore and not overrides and params_path.exists():
            raise type(e)(f"{e}{restore_message(params_path, Path(lock), e)}") from None
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
