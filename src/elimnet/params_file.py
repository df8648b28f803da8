"""params.yaml against dvc.lock: the values the last run used, what differs, and putting one key back.

A key is put back by rewriting its own line (and the block lines of its old value), never by dumping the
file again: a round-trip writer turns `batch_sizes: [1, 8, 64]` into a block list, and `git status` would
show params.yaml modified after a failed run.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

from elimnet.config import Config, flatten, schema, yaml_load
from elimnet.dvc_files import resolved_values, stage_params
from elimnet.errors import ElimnetError


def locked_values(lock: str | Path) -> dict[str, Any]:
    """{dotted key: value} of every param dvc.lock recorded, in any stage (listed keys or whole sections)."""
    lock = Path(lock)
    if not lock.exists():
        return {}
    out: dict[str, Any] = {}
    for st in ((yaml_load(lock.read_text()) or {}).get("stages") or {}).values():  # YAML 1.2, as DVC writes
        for file_params in (st.get("params") or {}).values():
            for listed, value in (file_params or {}).items():
                if isinstance(value, dict):
                    out.update(flatten(value, listed + "."))
                out.setdefault(listed, value)  # a section (or a map-valued key) as a whole, too
    return out


def show(value: Any) -> str:
    """A value as one line of YAML flow style: what `-S key=value` and params.yaml both read."""
    return yaml.safe_dump(value, default_flow_style=True, width=10**6).strip().removesuffix("...").strip()


def changed_since_lock(params_path: str | Path, lock: str | Path) -> list[str]:
    """`key=value` for every key of params.yaml whose value differs from the one dvc.lock recorded."""
    try:
        flat = flatten(yaml_load(Path(params_path).read_text()) or {})
    except yaml.YAMLError:
        return []
    locked = locked_values(lock)
    return [f"{k}={show(v)}" for k, v in flat.items() if k in locked and locked[k] != v]


def _value_span(lines: list[str], key: str) -> tuple[int, int, int] | None:
    """(first line, end line, indent) of `key`'s entry in a block-style mapping, or None."""
    lo, hi, parent = 0, len(lines), -1
    found = None
    for part in key.split("."):
        found, child = None, None
        for i in range(lo, hi):
            body = lines[i].lstrip(" ")
            if not body.strip() or body.startswith("#"):
                continue
            indent = len(lines[i]) - len(body)
            if indent <= parent:
                break
            child = indent if child is None else child
            if indent == child and re.match(re.escape(part) + r"\s*:(\s|$)", body):
                found = (i, indent)
                break
        if found is None:
            return None
        lo, parent = found[0] + 1, found[1]
    start, indent = found
    end = start + 1
    while end < len(lines):  # the old value's block lines: deeper, or a `- item` at the key's indent
        body = lines[end].lstrip(" ")
        depth = len(lines[end]) - len(body)
        if not body.strip() or not (depth > indent or (depth == indent and body.startswith("- "))):
            break
        end += 1
    return start, end, indent


def _block_list_offset(text: str) -> int | None:
    """How far the `- ` items of the file's block lists stand right of their key (ruamel: 0), or None when
    the file writes non-empty lists in flow style (`[1, 8, 64]`) or has no block list."""
    if re.search(r":[ \t]*\[[^\]\s]", text):
        return None
    m = re.search(r"^([ \t]*)[^\s#-][^\n]*:[ \t]*\n([ \t]*)- ", text, re.M)
    return len(m.group(2)) - len(m.group(1)) if m else None


def _key_lines(old: str, leaf: str, indent: int, value: Any, text: str) -> list[str]:
    """The new text for `leaf: value`, written as the file writes it: lists in its list style, null as an
    empty value unless the file spells out `null`, an inline comment kept at its column. Then the same
    without the comment."""
    shown, items = show(value), ""
    if value is None and not re.search(r":[ \t]+(null|~)[ \t]*(#.*)?$", text, re.M):
        shown = ""  # DVC's writer (ruamel) leaves nulls empty: `path:`
    offset = _block_list_offset(text)
    if isinstance(value, list) and value and offset is not None and not any(isinstance(x, (list, dict)) for x in value):
        shown, items = "", "".join(f"\n{' ' * (indent + offset)}- {show(x)}" for x in value)
    head = f"{' ' * indent}{leaf}:" + (f" {shown}" if shown else "")
    comment = re.search(r"\s#[^'\"]*$", old)  # (a '#' inside a quoted value is left alone)
    if not comment:
        return [head + items]
    column = comment.start() + 1  # where the '#' stands
    return [head + " " * max(1, column - len(head)) + comment.group(0)[1:] + items, head + items]


def committed_text(params_path: str | Path) -> str | None:
    """params.yaml as committed at git HEAD (None outside git): the layout a restored key had before
    `dvc exp run -S` rewrote it (a block list, or `[1, 8, 64]`)."""
    import subprocess

    path = Path(params_path)
    try:
        out = subprocess.run(["git", "show", f"HEAD:./{path.name}"], cwd=path.parent, capture_output=True,
                             text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


def _committed_lines(reference: str | None, key: str, value: Any) -> list[str]:
    """`key`'s lines in `reference` when they hold `value` there: the exact bytes to put back."""
    if not reference:
        return []
    try:
        if flatten(yaml_load(reference) or {}).get(key, object()) != value:
            return []
    except yaml.YAMLError:
        return []
    ref_lines = reference.splitlines(keepends=True)
    span = _value_span(ref_lines, key)
    return ["".join(ref_lines[span[0]:span[1]]).rstrip("\n")] if span else []


def restore_key(params_path: str | Path, key: str, value: Any, reference: str | None = None) -> bool:
    """Set `key` to `value` in params.yaml by rewriting only its lines; False when it already held it.
    `reference` (e.g. committed_text()) gives the lines' exact layout where it holds the same value.
    Falls back to DVC's round-trip writer when the line cannot be found or the edit would not parse back."""
    path = Path(params_path)
    text = path.read_text()
    tree = yaml_load(text) or {}
    if key in flatten(tree) and flatten(tree)[key] == value:
        return False
    lines = text.splitlines(keepends=True)
    span = _value_span(lines, key)
    if span is not None:
        start, end, indent = span
        expected = {**flatten(tree), key: value}
        leaf = key.rsplit(".", 1)[-1]
        for line in _committed_lines(reference, key, value) + _key_lines(lines[start].rstrip("\n"), leaf, indent,
                                                                          value, text):
            new_text = "".join(lines[:start] + [line + "\n"] + lines[end:])
            try:
                if flatten(yaml_load(new_text) or {}) == expected:
                    path.write_text(new_text)
                    return True
            except yaml.YAMLError:
                continue
    from dvc.utils.serialize import modify_yaml  # DVC's own round-trip writer: the layout may change

    with modify_yaml(path) as doc:
        node = doc
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return True


def _bad_keys(err: ElimnetError) -> list[str]:
    head = str(err).split(":")[0]
    return [k for k in re.findall(r"[a-z_][\w.]*", head) if k in schema()]


def restore_message(params_path: Path, lock: Path, err: ElimnetError) -> str:
    """Put each key at fault back to its dvc.lock value (editing its line only); return, for the error
    line, what was put back and which other keys still differ from dvc.lock."""
    locked, committed = locked_values(lock), committed_text(params_path)
    done = [f"{key}={show(locked[key])}" for key in _bad_keys(err)
            if key in locked and restore_key(params_path, key, locked[key], reference=committed)]
    missing = [key for key in _bad_keys(err) if key not in locked]
    msg = f"; {params_path}: {', '.join(done)} restored from dvc.lock" if done else ""
    if missing:
        msg += f"; fix {', '.join(missing)} in {params_path} (or `git checkout {params_path}`)"
    others = changed_since_lock(params_path, lock)
    if others:
        msg += f"; still different from dvc.lock: {', '.join(others)} (`git checkout {params_path}` puts them back)"
    elif done:
        msg += ", no other key differs from dvc.lock"
    return msg


def stale_stages(cfg: Config, dvc_yaml: str | Path, lock: Path) -> set[str]:
    """Stages whose resolved params differ from the values dvc.lock ran them with (or that never ran)."""
    locked = locked_values(lock)
    return {stage for stage, keys in stage_params(dvc_yaml).items()
            if any(locked.get(k, object()) != v for k, v in resolved_values(cfg, keys).items())}
