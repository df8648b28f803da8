"""The seeds' comparison table and a Pareto front over experiments.

Rows: the full finetuned model of each (arch, weights, data, recipe) once, then every candidate,
labelled by its method (Elim k, LayerPrune k, Diet g, Filter r, KD, "empty" for random init).
Experiments that differ only in `seed` are one row: `n` seeds, each quality metric as mean, sd
and 95% CI (elimnet.train.uncertainty), and for candidates the test macro-F1 delta vs their own seed's
full model with a verdict ("loss" / "gain" / "no loss detected") read off its interval.
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
from elimnet.io import write_json, write_text
from elimnet.report.figures import plot_pareto
from elimnet.report.records import ExpRecord
from elimnet.train import uncertainty

QUALITY = [f"{split}_{m}" for m in ("loss", "acc", "macro_f1") for split in ("train", "val", "test")]
_LAT = re.compile(r"^latency_(?P<backend>[a-z0-9_]+?)_bs(?P<bs>\d+)_ms$")  # ort_int8 has a digit
# Test quality of the exported artifacts (export stage), per precision: test_macro_f1_onnx_int8 etc.
DEPLOYED = [f"test_{m}_onnx_{p}" for p in ("fp32", "int8") for m in ("acc", "macro_f1")]
# A full model is the same run across experiments when these agree (the DVC baseline is cached);
# its seeds are one row.
_BASELINE_KEYS = ("data.", "train.", "model.arch", "model.weights", "model.block", "model.experts")
SEED_KEYS = ("seed",)  # what repeats of one experiment differ in
BOOTSTRAPPED = ("test_acc", "test_macro_f1")  # evaluate writes their per-seed bootstrap CI as <metric>_ci
DELTA = "delta_test_macro_f1"


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
    """The full model's identity across experiments, seed left out: its seeds are one row."""
    keep = {k: v for k, v in rec.params.items()
            if k.startswith(_BASELINE_KEYS) and not k.startswith("train.kd.") and k not in SEED_KEYS}
    return repr((rec.summary.get("arch"), _weights(rec.params, rec.summary), sorted(keep.items())))


def _group_key(rec: ExpRecord) -> str:
    """Experiments that differ only in the seed (or the tracking settings) are repeats of one candidate."""
    if not rec.params:  # no params to compare (an MLflow run without them): its own group
        return repr(("run", rec.name, rec.source))
    keep = {k: v for k, v in rec.params.items() if k not in SEED_KEYS and not k.startswith("mlflow.")}
    return repr((rec.summary.get("arch"), sorted(keep.items())))


def _latency_cols(rows: Iterable[dict]) -> list[str]:
    cols = {k for r in rows for k in r if _LAT.match(k)}
    order = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(cols, key=lambda k: (order.get(_LAT.match(k)["backend"], 99), int(_LAT.match(k)["bs"])))


def _seed(rec: ExpRecord):
    return rec.params.get("seed", rec.name)  # no seed known: every record counts as its own repeat


def _one_per_seed(recs: list[ExpRecord]) -> list[ExpRecord]:
    """First record of each seed (the baseline of one seed is one cached run, repeated in every experiment)."""
    seen, out = set(), []
    for r in recs:
        if repr(_seed(r)) not in seen:
            seen.add(repr(_seed(r)))
            out.append(r)
    return out


def _ci_of(row: dict, key: str) -> list[float] | None:
    ci = row.get(key)
    return list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) for v in ci) else None


def _aggregate(parts: list[dict], base: dict) -> dict:
    """Mean, sd and 95% CI of every quality metric over the seeds' rows `parts` (one row per seed)."""
    row = dict(base, n=len(parts))
    for q in QUALITY + [d for d in DEPLOYED if any(d in p for p in parts)]:
        vals = [p.get(q) for p in parts if _num(p.get(q))]
        s = uncertainty.seed_summary(vals)
        boot = [_ci_of(p, f"{q}_ci") for p in parts] if q in BOOTSTRAPPED else []
        row[q], row[f"{q}_sd"] = s["mean"], s["sd"]
        row[f"{q}_ci"] = uncertainty.combined_ci(vals, boot) if any(boot) else s["ci"]
    return row


def _delta(recs: list[ExpRecord]) -> dict:
    """The candidate's test macro-F1 minus its own seed's full model, over seeds, with CI and verdict."""
    vals, boot = [], []
    for r in recs:
        s = r.summary
        d = s.get("delta_test_macro_f1", (s.get("ratios") or {}).get("test_macro_f1_delta"))
        if _num(d):
            vals.append(d)
            boot.append(_ci_of(s, "delta_test_macro_f1_ci"))
    summ = uncertainty.seed_summary(vals)
    ci = uncertainty.combined_ci(vals, boot) if any(boot) else summ["ci"]
    return {"delta_test_macro_f1": summ["mean"], "delta_test_macro_f1_sd": summ["sd"],
            "delta_test_macro_f1_ci": ci, "verdict": uncertainty.verdict(ci)}


def comparison_rows(records: list[ExpRecord]) -> list[dict]:
    """One row per distinct full model, then one per candidate (sorted by arch, then method).

    Experiments that differ only in `seed` share a row: `n` seeds, each quality metric as mean,
    `_sd` and `_ci` (95%), the paired test macro-F1 delta to the full model and its verdict.
    """
    full: dict[str, list[ExpRecord]] = {}
    groups: dict[str, list[ExpRecord]] = {}
    for rec in records:
        full.setdefault(_baseline_key(rec), []).append(rec)
        groups.setdefault(_group_key(rec), []).append(rec)
    rows = []
    for recs in full.values():
        s = recs[0].summary
        arch = s.get("arch") or recs[0].params.get("model.arch")
        name = f"full {arch}" + (" (empty)" if _weights(recs[0].params, s) == "none" else "")
        seeds = _one_per_seed(recs)
        row = _aggregate([r.summary.get("baseline") or {} for r in seeds],
                         {"name": name, "role": "full", "arch": arch, "experiment": ",".join(r.name for r in seeds),
                          "seeds": [_seed(r) for r in seeds], **_fixed(s.get("baseline") or {})})
        # The baseline is re-timed in every experiment: its median over them is the steadier figure.
        row.update(_median_latency([r.summary.get("baseline") or {} for r in recs]))
        rows.append(row)
    cands = []
    for recs in groups.values():
        seeds = _one_per_seed(recs)
        s = seeds[0].summary
        arch = s.get("arch") or seeds[0].params.get("model.arch")
        row = _aggregate([r.summary.get("candidate") or {} for r in seeds],
                         {"name": method_label(seeds[0].params, s), "role": "candidate", "arch": arch,
                          "experiment": ",".join(r.name for r in seeds), "seeds": [_seed(r) for r in seeds],
                          **_fixed(s.get("candidate") or {})})
        row.update(_median_latency([r.summary.get("candidate") or {} for r in seeds]))
        for k in {k for r in seeds for k in (r.summary.get("ratios") or {}) if k.startswith("latency_reduction_")}:
            vals = [v for r in seeds if _num(v := (r.summary.get("ratios") or {}).get(k))]
            if vals:
                row[k.replace("latency_reduction_", "reduction_")] = statistics.median(vals)
        row.update(_delta(seeds))
        cands.append(row)
    rows += sorted(cands, key=lambda r: (str(r["arch"]), _natural(r["name"])))
    rows.sort(key=lambda r: str(r["arch"]))  # stable: full rows stay first within their arch
    return rows


def _fixed(row: dict) -> dict:
    return {k: row.get(k) for k in ("params", "layers", "macs")}


def _median_latency(parts: list[dict]) -> dict:
    cols = {k for p in parts for k in p if _LAT.match(k)}
    out = {}
    for k in cols:
        vals = [p[k] for p in parts if _num(p.get(k))]
        out[k] = statistics.median(vals) if vals else None
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
    deployed = [c for c in DEPLOYED if any(c in r for r in rows)]
    return ["name", "arch", "experiment", "n", "params", "layers", "macs", *lat, *red, *QUALITY, *deployed, DELTA,
            "verdict", "pareto"]


# ----------------------------------------------------------------------------- output
def _csv_cols(rows: list[dict]) -> list[str]:
    out = []
    for c in columns(rows):
        out.append(c)
        if c in QUALITY or c == DELTA:
            out += [f"{c}_sd", f"{c}_ci_lo", f"{c}_ci_hi"]
    return out


def _csv_values(r: dict) -> dict:
    out = dict(r)
    for c in (*QUALITY, DELTA):
        ci = r.get(f"{c}_ci")
        out[f"{c}_ci_lo"], out[f"{c}_ci_hi"] = ci if ci else (None, None)
    return out


def to_csv(rows: list[dict]) -> str:
    """One line per row; each quality metric and the delta as mean, _sd, _ci_lo, _ci_hi (empty when unknown)."""
    cols = _csv_cols(rows)
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n", extrasaction="ignore")
    w.writeheader()
    for r in map(_csv_values, rows):
        w.writerow({c: ("" if r.get(c) is None else r.get(c)) for c in cols})
    return buf.getvalue()


def _header(col: str) -> str:
    m = _LAT.match(col)
    if m:
        return f"{m['backend']} bs{m['bs']} ms"
    if col.startswith("reduction_"):
        backend, bs = col.removeprefix("reduction_").rsplit("_bs", 1)
        return f"{backend} bs{bs} faster"
    return {"macs": "MMACs", "params": "params (M)", "pareto": "front", DELTA: "test F1 delta vs full",
            "verdict": "verdict (95%)"}.get(col, col.replace("_", " "))


def _cell(col: str, v: Any, row: dict | None = None) -> str:
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
    if (col in QUALITY or col == DELTA) and row is not None:
        f = "{:+.3f}" if col == DELTA else "{:.4f}" if "loss" in col else "{:.3f}"
        text = f.format(v)
        if row.get(f"{col}_sd") is not None:
            text += " ± " + f.format(row[f"{col}_sd"]).lstrip("+")
        ci = row.get(f"{col}_ci")
        return text + (f" [{f.format(ci[0])}, {f.format(ci[1])}]" if ci else "")
    if isinstance(v, float):
        return f"{v:.4f}" if "loss" in col else f"{v:.3f}"
    return str(v)


def to_markdown(rows: list[dict]) -> str:
    """The table; a metric over seeds reads `mean ± sd [95% CI]` (one seed: value [bootstrap CI])."""
    cols = [c for c in columns(rows) if c != "experiment"]
    lines = ["| " + " | ".join(_header(c) for c in cols) + " |",
             "|" + "|".join(":---" if c in ("name", "arch", "verdict") else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(_cell(c, r.get(c), r) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def write_comparison(records: list[ExpRecord], out_dir: str | Path, x: str = "latency_cpu_bs1_ms",
                     y: str = "test_macro_f1") -> dict:
    """compare.md, compare.csv, pareto.png and pareto.json (the `dvc plots` data) under out_dir."""
    out = Path(out_dir)
    rows = comparison_rows(records)
    front = mark_pareto(rows, x, y)
    write_text(out / "compare.md", to_markdown(rows))
    write_text(out / "compare.csv", to_csv(rows))
    plot_pareto(rows, out / "pareto.png", x, y, xlabel=_header(x).replace(" ms", " latency (ms)"))
    points = [{"name": r["name"], "arch": r["arch"], x: r[x], y: r[y], f"{y}_ci": r.get(f"{y}_ci"), "n": r["n"],
               "params": r.get("params"), "front": bool(r["pareto"])} for r in rows if r["pareto"] is not None]
    write_json(out / "pareto.json", points)
    return {"rows": rows, "front": front, "files": [str(out / f) for f in
                                                    ("compare.md", "compare.csv", "pareto.png", "pareto.json")]}
