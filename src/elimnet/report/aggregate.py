"""Experiment records -> the comparison rows: seeds pooled, verdicts, one machine's latencies, Pareto front.

Rows: the full finetuned model of each (arch, weights, data, recipe) once, then every candidate,
labelled by its method (Elim k, LayerPrune k, Diet g, Filter r, KD, "empty" for random init).
Experiments that differ only in `seed` are one row: `n` trainings (each experiment's train.repeats, or
its k-fold folds, summed over the seeds), each quality metric as mean, sd and 95% CI
(elimnet.train.uncertainty), and for candidates the test macro-F1 delta vs their own seed's full model
with a verdict ("loss" / "gain" / "no loss detected") read off its interval.

Latency is never pooled across machines: records are grouped per hardware fingerprint (records.machine_id),
and the milliseconds shown come from one machine, the reference (the first record's: the workspace when
it has a result). Rows measured elsewhere keep their paired reductions (candidate vs its own full model,
timed in the same run) and no milliseconds, and stay off the Pareto front.
"""
from __future__ import annotations

import math
import re
import statistics
from typing import Any, Iterable

from elimnet.bench import BACKENDS
from elimnet.bench.backends import canonical_metric_name
from elimnet.deploy.artifacts import PRECISIONS, onnx_name
from elimnet.report.records import ExpRecord
from elimnet.train import uncertainty

QUALITY = [f"{split}_{m}" for m in ("loss", "acc", "macro_f1") for split in ("train", "val", "test")]
LATENCY_KEY = re.compile(r"^latency_(?P<backend>[a-z0-9_]+?)_bs(?P<bs>\d+)_ms$")  # ort_int8 has a digit
# Test quality of the exported artifacts (export stage), per precision: test_macro_f1_onnx_int8 etc.
DEPLOYED = [f"test_{m}_{onnx_name(p)}" for p in PRECISIONS for m in ("acc", "macro_f1")]
# A full model is the same run across experiments when these agree (the DVC baseline is cached);
# its seeds are one row.
_BASELINE_KEYS = ("data.", "train.", "model.arch", "model.weights", "model.block", "model.experts")
SEED_KEYS = ("seed",)  # what repeats of one experiment differ in
BOOTSTRAPPED = ("test_acc", "test_macro_f1")  # evaluate writes their per-seed bootstrap CI as <metric>_ci
DELTA = "delta_test_macro_f1"
# ONNX Runtime's backend was called `onnx` before it became `ort`: records of both ages land in one column.
_DEPLOYED_NAMES = re.compile(rf"^(test_(?:acc|macro_f1))_(?:onnx|ort)_({'|'.join(PRECISIONS)})")


def canonical_key(key: str) -> str:
    """One name per column whichever release wrote the record (`onnx`/`ort`, deployed `_onnx_`/`_ort_`)."""
    return _DEPLOYED_NAMES.sub(r"\g<1>_onnx_\g<2>", canonical_metric_name(key))


def _canonical(d: dict | None) -> dict:
    return {canonical_key(k): v for k, v in (d or {}).items()}


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
    """The full model's identity across experiments, seed left out (its seeds are one row), per machine."""
    keep = {k: v for k, v in rec.params.items()
            if k.startswith(_BASELINE_KEYS) and not k.startswith("train.kd.") and k not in SEED_KEYS}
    return repr((rec.summary.get("arch"), _weights(rec.params, rec.summary), sorted(keep.items()), rec.machine))


def _group_key(rec: ExpRecord) -> str:
    """Experiments that differ only in the seed (or the tracking settings) on one machine are repeats."""
    if not rec.params:  # no params to compare (an MLflow run without them): its own group
        return repr(("run", rec.name, rec.source))
    keep = {k: v for k, v in rec.params.items() if k not in SEED_KEYS and not k.startswith("mlflow.")}
    return repr((rec.summary.get("arch"), sorted(keep.items()), rec.machine))


def latency_columns(rows: Iterable[dict]) -> list[str]:
    cols = {k for r in rows for k in r if LATENCY_KEY.match(k)}
    order = {b: i for i, b in enumerate(BACKENDS)}
    return sorted(cols, key=lambda k: (order.get(LATENCY_KEY.match(k)["backend"], 99),
                                       int(LATENCY_KEY.match(k)["bs"])))


def _seed(rec: ExpRecord):
    return rec.params.get("seed", rec.name)  # no seed known: every record counts as its own repeat


def _one_per_seed(recs: list[ExpRecord]) -> list[ExpRecord]:
    """First record of each seed: records come workspace first, so a user's own run wins over older ones
    (and the baseline of one seed is one cached run, repeated in every experiment)."""
    seen, out = set(), []
    for r in recs:
        if repr(_seed(r)) not in seen:
            seen.add(repr(_seed(r)))
            out.append(r)
    return out


def _ci_of(row: dict, key: str) -> list[float] | None:
    ci = row.get(key)
    return list(ci) if isinstance(ci, (list, tuple)) and len(ci) == 2 and all(_num(v) for v in ci) else None


def trainings(rec: ExpRecord) -> int:
    """How many trainings one record's figures pool: its report's k-fold folds or train.repeats (1 before
    the report pooled repeats)."""
    s = rec.summary
    return int(s.get("folds") or s.get("repeats") or 1)


def _pool_seeds(parts: list[dict], base: dict) -> dict:
    """Mean, sd and 95% CI of every quality metric over the seeds' rows `parts` (one row per seed)."""
    row = dict(base)
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
    per = (recs[0].summary.get("per_repeat") or {}).get(DELTA) if len(recs) == 1 else None
    if isinstance(per, list) and len(per) > 1:  # one experiment's repeats: their spread
        summ["sd"] = uncertainty.seed_summary(per)["sd"]
    return {"delta_test_macro_f1": summ["mean"], "delta_test_macro_f1_sd": summ["sd"],
            "delta_test_macro_f1_ci": ci, "verdict": uncertainty.verdict(ci)}


def _role_rows(recs: list[ExpRecord], role: str) -> list[dict]:
    return [_canonical(r.summary.get(role)) for r in recs]


def _repeat_sd(row: dict, seeds_: list[ExpRecord], role: str) -> dict:
    """One experiment pooling repeats: each metric's sd over its repeats (summary.json's per_repeat), since
    one seed's row has no spread of its own; its mean and CI are already the report's pooled ones."""
    per = ((seeds_[0].summary.get("per_repeat") or {}).get(role) or {}) if len(seeds_) == 1 else {}
    for q, vals in per.items():
        if q in QUALITY and isinstance(vals, list) and len(vals) > 1:
            row[f"{q}_sd"] = uncertainty.seed_summary(vals)["sd"]
    return row


def _identity(recs: list[ExpRecord], name: str, role: str, arch) -> dict:
    """The row's fixed columns; `role` is the summary's ("baseline" or "candidate")."""
    seeds_ = _one_per_seed(recs)
    return {"name": name, "role": "full" if role == "baseline" else role, "arch": arch,
            "experiment": ",".join(r.name for r in seeds_), "seeds": [_seed(r) for r in seeds_],
            "n": sum(trainings(r) for r in seeds_), "folds": any(r.summary.get("folds") for r in seeds_),
            "machine": recs[0].machine, "hardware": recs[0].hardware,
            **_fixed(_canonical(seeds_[0].summary.get(role)))}


def _full_row(recs: list[ExpRecord]) -> dict:
    s = recs[0].summary
    arch = s.get("arch") or recs[0].params.get("model.arch")
    name = f"full {arch}" + (" (empty)" if _weights(recs[0].params, s) == "none" else "")
    seeds_ = _one_per_seed(recs)
    row = _pool_seeds(_role_rows(seeds_, "baseline"), _identity(recs, name, "baseline", arch))
    _repeat_sd(row, seeds_, "baseline")
    # The baseline is re-timed in every experiment on this machine: their median is the steadier figure.
    row.update(_median_latency(_role_rows(recs, "baseline")))
    return row


def _candidate_row(recs: list[ExpRecord]) -> dict:
    seeds_ = _one_per_seed(recs)
    s = seeds_[0].summary
    arch = s.get("arch") or seeds_[0].params.get("model.arch")
    row = _pool_seeds(_role_rows(seeds_, "candidate"),
                      _identity(seeds_, method_label(seeds_[0].params, s), "candidate", arch))
    _repeat_sd(row, seeds_, "candidate")
    row.update(_median_latency(_role_rows(seeds_, "candidate")))
    ratios = [_canonical(r.summary.get("ratios")) for r in seeds_]
    for k in {k for rat in ratios for k in rat if k.startswith("latency_reduction_")}:
        vals = [v for rat in ratios if _num(v := rat.get(k))]
        if vals:
            row[k.replace("latency_reduction_", "reduction_")] = statistics.median(vals)
    row.update(_delta(seeds_))
    return row


# The default latency axis, most deployed first: what each one is, for the line above the table.
AXES = {"ort_int8": "ONNX Runtime INT8, the deployed runtime (deploy.precision=int8)",
        "ort": "ONNX Runtime fp32, the deployed runtime",
        "cpu": "eager PyTorch: no ONNX Runtime timings in these runs"}


def default_x(rows: list[dict], records: list[ExpRecord], batch_size: int = 1) -> tuple[str, str]:
    """(latency column, what it is) of the runtime the reference run deployed, at `batch_size`: ort_int8 when it
    shipped INT8, else ort fp32, when the reference machine's rows have it; eager `cpu` as the fallback."""
    ref = next((r for r in records if r.machine is not None), records[0] if records else None)
    int8 = ref is not None and ref.params.get("deploy.precision") == "int8"
    for backend in [b for b in AXES if b != "ort_int8" or int8]:
        x = canonical_key(f"latency_{backend}_bs{batch_size}_ms")
        if any(_num(r.get(x)) for r in rows if not r.get("elsewhere")):
            return x, AXES[backend]
    return canonical_key(f"latency_cpu_bs{batch_size}_ms"), AXES["cpu"]


def reference_machine(records: list[ExpRecord]) -> str | None:
    """The machine whose milliseconds the table shows: the first record's that has one (the workspace's)."""
    return next((r.machine for r in records if r.machine is not None), None)


def comparison_rows(records: list[ExpRecord]) -> list[dict]:
    """One row per distinct full model, then one per candidate (sorted by arch, then method), per machine.

    Experiments that differ only in `seed` share a row: `n` seeds, each quality metric as mean,
    `_sd` and `_ci` (95%), the paired test macro-F1 delta to the full model and its verdict. Rows
    measured on another machine than the reference keep no millisecond column (`elsewhere` is True).
    """
    full: dict[str, list[ExpRecord]] = {}
    groups: dict[str, list[ExpRecord]] = {}
    for rec in records:
        full.setdefault(_baseline_key(rec), []).append(rec)
        groups.setdefault(_group_key(rec), []).append(rec)
    rows = [_full_row(recs) for recs in full.values()]
    cands = [_candidate_row(recs) for recs in groups.values()]
    rows += sorted(cands, key=lambda r: (str(r["arch"]), _natural(r["name"])))
    rows.sort(key=lambda r: str(r["arch"]))  # stable: full rows stay first within their arch, workspace first
    ref = reference_machine(records)
    for r in rows:
        r["elsewhere"] = r["machine"] != ref
        if r["elsewhere"]:  # never put another machine's milliseconds next to the reference's
            for k in [k for k in r if LATENCY_KEY.match(k)]:
                r[k] = None
    return rows


def _fixed(row: dict) -> dict:
    return {k: row.get(k) for k in ("params", "layers", "macs")}


def _median_latency(parts: list[dict]) -> dict:
    cols = {k for p in parts for k in p if LATENCY_KEY.match(k)}
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
    """Set row['pareto'] (True/False; None when a row lacks x or y); return the front's row indices.

    Only rows timed on the reference machine have an x (comparison_rows), so the front never joins
    points measured on different machines."""
    idx = [i for i, r in enumerate(rows) if _num(r.get(x)) and _num(r.get(y)) and not r.get("elsewhere")]
    front = {idx[j] for j in pareto_front([(rows[i][x], rows[i][y]) for i in idx])}
    for i, r in enumerate(rows):
        r["pareto"] = (i in front) if i in idx else None
    return sorted(front)


def columns(rows: list[dict]) -> list[str]:
    """Every column some row has, in the table's order (the Markdown/CSV files and `--wide`)."""
    lat = latency_columns(rows)
    red = [c.replace("latency_", "reduction_").removesuffix("_ms") for c in lat]
    red += sorted({k for r in rows for k in r if k.startswith("reduction_") and k not in red})
    red = [c for c in red if any(c in r for r in rows)]
    lat = [c for c in lat if any(_num(r.get(c)) for r in rows)]
    deployed = [c for c in DEPLOYED if any(c in r for r in rows)]
    machine = ["machine"] if len({r.get("machine") for r in rows}) > 1 else []
    return ["name", "arch", "experiment", "n", *machine, "params", "layers", "macs", *lat, *red, *QUALITY, *deployed,
            DELTA, "verdict", "pareto"]
