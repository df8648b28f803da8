"""Declaring a parameter: `Field(default, check, help)` and the checks it may use.

A leaf module (stdlib only), so any registry entry (a compression, a data source, a backend)
can declare its own params without importing config.py. A check returns None when the value is
fine, else "what is allowed" (config.py turns that into `key=value: must be <allowed>`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable


@dataclass(frozen=True)
class Field:
    default: Any
    check: Callable[[Any], str | None]  # returns "what is allowed" when the value is bad
    help: str = ""


def is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def int_range(lo: int | None = None, hi: int | None = None, optional: bool = False):
    def check(v):
        if optional and v is None:
            return None
        if is_int(v) and (lo is None or v >= lo) and (hi is None or v <= hi):
            return None
        span = f"an integer >= {lo}" if hi is None else f"an integer in [{lo}, {hi}]"
        return span + (" or null" if optional else "")
    return check


def num_range(lo: float | None = None, hi: float | None = None, optional: bool = False,
              lo_open: bool = False):
    def check(v):
        if optional and v is None:
            return None
        if _is_num(v):
            ok_lo = lo is None or (v > lo if lo_open else v >= lo)
            ok_hi = hi is None or v <= hi
            if ok_lo and ok_hi:
                return None
        op = ">" if lo_open else ">="
        span = f"a number {op} {lo}" if hi is None else f"a number in {'(' if lo_open else '['}{lo}, {hi}]"
        return span + (" or null" if optional else "")
    return check


def one_of(choices: Iterable[Any] | Callable[[], Iterable[Any]], optional: bool = False):
    def check(v):
        allowed = list(choices() if callable(choices) else choices)
        if (optional and v is None) or v in allowed:
            return None
        return "one of " + ", ".join(map(str, allowed)) + (" or null" if optional else "")
    return check


def is_bool(v):
    return None if isinstance(v, bool) else "true or false"


def is_str(optional: bool = False):
    def check(v):
        if (optional and v is None) or (isinstance(v, str) and v):
            return None
        return "a non-empty string" + (" or null" if optional else "")
    return check


def int_list(lo: int = 1):
    def check(v):
        if isinstance(v, list) and v and all(is_int(x) and x >= lo for x in v):
            return None
        return f"a non-empty list of integers >= {lo}"
    return check


def str_map(v):
    if isinstance(v, dict) and all(isinstance(k, str) and isinstance(x, str) for k, x in v.items()):
        return None
    return "a mapping of strings to strings"
