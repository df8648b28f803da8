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

from elimnet.config import flatten, yaml_load


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


def _key_lines(old: str, leaf: str, indent: int, value: Any, text: str) -> list[str]:
    """The new line for `leaf: value`, written as the file writes it: null as an empty value unless the file
    spells out `null`, and an inline comment kept at its column. Then the same without the comment."""
    shown = show(value)
    if value is None and not re.search(r":[ \t]+(null|~)[ \t]*(#.*)?$", text, re.M):
        shown = ""  # DVC's writer (ruamel) leaves nulls empty: `path:`
    head = f"{' ' * indent}{leaf}:" + (f" {shown}" if shown else "")
    comment = re.search(r"\s#[^'\"]*$", old)  # (a '#' inside a quoted value is left alone)
    if not comment:
        return [head]
    column = comment.start() + 1  # where the '#' stands
    return [head + " " * max(1, column - len(head)) + comment.group(0)[1:], head]


def restore_key(params_path: str | Path, key: str, value: Any) -> bool:
    """Set `key` to `value` in params.yaml by rewriting only its line; False when it already held it.
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
        for line in _key_lines(lines[start].rstrip("\n"), key.rsplit(".", 1)[-1], indent, value, text):
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
