"""What the params stage reads from DVC's files: each stage's listed params (dvc.yaml), the values a stage
last ran with (dvc.lock), and the resolved values of listed keys."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from elimnet.config import Config

PARAMS_STAGE = "params"  # the stage that validates params.yaml and writes resolved/<stage>.json


def stage_params(dvc_yaml: str | Path) -> dict[str, list[str]]:
    """{stage: the params.yaml keys or sections it lists} from dvc.yaml (foreach stages once)."""
    stages = (yaml.safe_load(Path(dvc_yaml).read_text()) or {}).get("stages", {})
    out = {}
    for name, st in stages.items():
        body = st.get("do", st)
        keys = [p for p in body.get("params", []) if isinstance(p, str)]
        if name != PARAMS_STAGE:
            out[name] = keys
    return out


def resolved_values(cfg: Config, keys: list[str]) -> dict[str, Any]:
    """Flat resolved values of the listed keys; a section name ("bench") stands for all its keys."""
    flat = cfg.flat()
    return {k: v for k, v in flat.items() if any(k == p or k.startswith(p + ".") for p in keys)}


def locked_value(lock: Path, key: str) -> tuple[bool, Any]:
    """The value dvc.lock recorded for `key` in any stage (DVC stores listed keys, or whole sections)."""
    if not lock.exists():
        return False, None
    stages = (yaml.safe_load(lock.read_text()) or {}).get("stages", {})
    for st in stages.values():
        for file_params in (st.get("params") or {}).values():
            for listed, value in file_params.items():
                if key == listed:
                    return True, value
                if key.startswith(listed + ".") and isinstance(value, dict):
                    node, ok = value, True
                    for part in key[len(listed) + 1:].split("."):
                        if not isinstance(node, dict) or part not in node:
                            ok = False
                            break
                        node = node[part]
                    if ok:
                        return True, node
    return False, None
