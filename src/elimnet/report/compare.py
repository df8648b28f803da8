"""The seeds' comparison table and a Pareto front over experiments.

Rows: the full finetuned model of each (arch, weights, data, recipe) once, then every candidate,
labelled by its method (Elim k, LayerPrune k, Diet g, Filter r, KD, "empty" for random init).
Columns: params, layers, MACs, latency per backend and batch size (and the candidate's paired
reduction vs its own baseline, measured in the same run), train/val/test loss, acc, macro-F1.
"""
from __future__ import annotations

import csv
import io
import math
import re
import statistics
from pathlib import Path
from typing import Any, Iterable

from elimnet.bench import BACKENDS
from elimnet.io import atomic_path, write_json, write_text
from elimnet.report.records import ExpRecord

QUALITY = [f"{split}_{m}" for m in ("loss", "acc", "macro_f1") for split in ("train", "val", "test")]
_LAT = re.compile(r"^latency_(?P<backend>[a-z]+)_bs(?P<bs>\d+)_ms$")
# A full model is the same run across experiments when these agree (the DVC baseline is cached).
_BASELINE_KEYS = ("seed", "data.", "train.", "model.arch", "model.weights", "model.block",
                  "model.experts")


def method_label(params: dict, summary: dict) -> str:
    """Human name of a candidate: 'Elim 2', 'LayerPrune k=3 (l1) + KD a=0.5', 'empty Diet g=4' ..."""
    parts = []
    if params:
        from elimnet.compress import ordered  # each compression names itself (compress/base.py)

        parts = [t.label(params) for t in ordered() if t.label is not None and not t.is_off(params)]
        if params.get("train.kd.alpha"):
            parts.append(f"KD a={params['train.kd.alpha']:g}")
    else:  # no params (e.g. an MLflow run logged without them): the applied steps
        parts = [s for s in summary.get("steps", []) if s != "classifier"]
    label = " + ".join(parts) or "uncompressed"
    return f"empty {label}" if _weights(params, summary) == "none" else label


def _weights(params: dict, summary: dict) -> str:
    return summary.get("weights") or params.get("model.weights") or "imagenet"


def _baseline_key(rec: ExpRecord) -> str:
    keep = {k: v for k, v in rec.params.items() if k.startswith(_BASELINE_KEYS) and not k.startswith("train.kd.")}
    return repr((rec.summary.get("arch"), _weights(rec.params, rec.summary), sorted(keep.items())))


def _latency_cols(rows: Iterable[dict]) -> list[str]:
    cols = {k for r in rows for k in r if _LAT.match(k)}
    order = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(cols, key=lambda k: (order.get(_LAT.match(k)["backend"], 99), int(_LAT.match(k)["bs"])))


def comparison_rows(records: list[ExpRecord]) -> list[dict]:
    """One row per distinct full model, then one per candidate (sorted by arch, then method)."""
    full: dict[str, dict] = {}
    full_lat: dict[str, dict[str, list[float]]] = {}
    cands = []
    for rec in records:
        s = rec.summary
        arch = s.get("arch") or rec.params.get("model.arch")
        key = _baseline_key(rec)
        b = s.get("baseline") or {}
        if key not in full:
            name = f"full {arch}" + (" (empty)" if _weights(rec.params, s) == "none" else "")
            full[key] = {"name": name, "role": "full", "arch": arch, "experiment": rec.name, **_pick(b)}
            full_lat[key] = {}
        for k, v in b.items():
            if _LAT.match(k) and _num(v):
                full_lat[key].setdefault(k, []).append(v)
        c = {"name": method_label(rec.params, s), "role": "candidate", "arch": arch, "experiment": rec.name,
             **_pick(s.get("candidate") or {})}
        for k, v in (s.get("ratios") or {}).items():
            if k.startswith("latency_reduction_"):
                c[k.replace("latency_reduction_", "reduction_")] = v
        cands.append(c)
    for key, row in full.items():
        # The baseline is re-timed in every experiment: its median over them is the steadier figure.
        row.update({k: statistics.median(v) for k, v in full_lat[key].items()})
    rows = list(full.values()) + sorted(cands, key=lambda r: (str(r["arch"]), _natural(r["name"])))
    rows.sort(key=lambda r: str(r["arch"]))  # stable: full rows stay first within their arch
    return rows


def _pick(row: dict) -> dict:
    out = {k: row.get(k) for k in ("params", "layers", "macs")}
    out.update({k: v for k, v in row.items() if _LAT.match(k)})
    out.update({k: row.get(k) for k in QUALITY})
    return out


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _natural(s: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", s)]


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the non-dominated points when x (latency) is minimised and y (quality) maximised."""
    front = []
    for i, (x, y) in enumerate(points):
        dominated = any(x2 <= x and y2 >= y and (x2 < x or y2 > y) for j, (x2, y2) in enumerate(points) if j != i)
        if not dominated:
            front.append(i)
    return front


def mark_pareto(rows: list[dict], x: str = "latency_cpu_bs1_ms", y: str = "test_macro_f1") -> list[int]:
    """Set row['pareto'] (True/False; None when a row lacks x or y); return the front's row indices."""
    idx = [i for i, r in enumerate(rows) if _num(r.get(x)) and _num(r.get(y))]
    front = {idx[j] for j in pareto_front([(rows[i][x], rows[i][y]) for i in idx])}
    for i, r in enumerate(rows):
        r["pareto"] = (i in front) if i in idx else None
    return sorted(front)


def columns(rows: list[dict]) -> list[str]:
    lat = _latency_cols(rows)
    red = [c.replace("latency_", "reduction_").removesuffix("_ms") for c in lat]
    red = [c for c in red if any(c in r for r in rows)]
    return ["name", "arch", "experiment", "params", "layers", "macs", *lat, *red, *QUALITY, "pareto"]


# ----------------------------------------------------------------------------- output
def to_csv(rows: list[dict]) -> str:
    cols = columns(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in rows:
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return buf.getvalue()


def _header(col: str) -> str:
    m = _LAT.match(col)
    if m:
        return f"{m['backend']} bs{m['bs']} ms"
    if col.startswith("reduction_"):
        backend, bs = col.removeprefix("reduction_").rsplit("_bs", 1)
        return f"{backend} bs{bs} faster"
    return {"macs": "MMACs", "params": "params (M)", "pareto": "front"}.get(col, col.replace("_", " "))


def _cell(col: str, v: Any) -> str:
    if v is None:
        return "–"
    if col == "params":
        return f"{v / 1e6:.3f}"
    if col == "macs":
        return f"{v / 1e6:.1f}"
    if col == "pareto":
        return "★" if v else ""
    if col.startswith("reduction_"):
        return f"{v:+.1%}"
    if _LAT.match(col):
        return f"{v:.2f}"
    if isinstance(v, float):
        return f"{v:.4f}" if "loss" in col else f"{v:.3f}"
    return str(v)


def to_markdown(rows: list[dict]) -> str:
    cols = [c for c in columns(rows) if c != "experiment"]
    lines = ["| " + " | ".join(_header(c) for c in cols) + " |",
             "|" + "|".join(":---" if c in ("name", "arch") else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(_cell(c, r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def plot_pareto(rows: list[dict], path: str | Path, x: str = "latency_cpu_bs1_ms", y: str = "test_macro_f1") -> None:
    """Quality vs latency, marker area proportional to params, the Pareto front drawn and ringed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts = [r for r in rows if _num(r.get(x)) and _num(r.get(y))]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if pts:
        pmax = max((r.get("params") or 0) for r in pts) or 1
        sizes = [30 + 470 * (r.get("params") or 0) / pmax for r in pts]
        colors = ["tab:gray" if r["role"] == "full" else "tab:blue" for r in pts]
        ax.scatter([r[x] for r in pts], [r[y] for r in pts], s=sizes, c=colors, alpha=0.55,
                   edgecolors="tab:red", linewidths=[2.0 if r.get("pareto") else 0.0 for r in pts])
        front = sorted((r for r in pts if r.get("pareto")), key=lambda r: r[x])
        if front:
            ax.step([r[x] for r in front], [r[y] for r in front], where="post", color="tab:red", lw=1.2,
                    label="Pareto front")
            ax.legend(loc="lower right", fontsize=8)
        for r in pts:
            ax.annotate(r["name"], (r[x], r[y]), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel(_header(x).replace(" ms", " latency (ms)"))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title("quality vs latency (marker area ~ params)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def write_comparison(records: list[ExpRecord], out_dir: str | Path, x: str = "latency_cpu_bs1_ms",
                     y: str = "test_macro_f1") -> dict:
    """compare.md, compare.csv, pareto.png and pareto.json (the `dvc plots` data) under out_dir."""
    out = Path(out_dir)
    rows = comparison_rows(records)
    front = mark_pareto(rows, x, y)
    write_text(out / "compare.md", to_markdown(rows))
    write_text(out / "compare.csv", to_csv(rows))
    plot_pareto(rows, out / "pareto.png", x, y)
    points = [{"name": r["name"], "arch": r["arch"], x: r[x], y: r[y], "params": r.get("params"),
               "front": bool(r["pareto"])} for r in rows if r["pareto"] is not None]
    write_json(out / "pareto.json", points)
    return {"rows": rows, "front": front, "files": [str(out / f) for f in
                                                    ("compare.md", "compare.csv", "pareto.png", "pareto.json")]}
