"""The comparison rows (report.aggregate) as a terminal summary, Markdown and CSV tables, and a Pareto plot.

The terminal summary fits `width` columns (160 by default: the headline columns only); the Markdown
table (`--wide`, compare.md) has every column. Files are written only where the caller asks.
"""
from __future__ import annotations

import csv
import io
import textwrap
from pathlib import Path
from typing import Any

from elimnet.io import write_json, write_text
from elimnet.report.aggregate import DELTA, LATENCY_KEY, QUALITY, columns
from elimnet.report.records import machine_label

SUMMARY_WIDTH = 160
FILES = ("compare.md", "compare.csv", "pareto.png", "pareto.json")


# ----------------------------------------------------------------------------- cells
def header(col: str) -> str:
    m = LATENCY_KEY.match(col)
    if m:
        return f"{m['backend']} bs{m['bs']} ms"
    if col.startswith("reduction_"):
        backend, bs = col.removeprefix("reduction_").rsplit("_bs", 1)
        return f"{backend} bs{bs} faster"
    return {"macs": "MMACs", "params": "params (M)", "pareto": "front", DELTA: "test F1 delta vs full",
            "verdict": "verdict (95%)"}.get(col, col.replace("_", " "))


def cell(col: str, v: Any, row: dict | None = None) -> str:
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
    if LATENCY_KEY.match(col):
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


# ----------------------------------------------------------------------------- files
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


def to_markdown(rows: list[dict]) -> str:
    """The table; a metric over seeds reads `mean ± sd [95% CI]` (one seed: value [bootstrap CI])."""
    cols = [c for c in columns(rows) if c != "experiment"]
    lines = ["| " + " | ".join(header(c) for c in cols) + " |",
             "|" + "|".join(":---" if c in ("name", "arch", "verdict", "machine") else "---:" for c in cols) + "|"]
    lines += ["| " + " | ".join(cell(c, r.get(c), r) for c in cols) + " |" for r in rows]
    return "\n".join(lines) + "\n" + "".join(f"\n{n}\n" for n in machine_notes(rows))


def pareto_points(rows: list[dict], x: str, y: str) -> list[dict]:
    """The `dvc plots` data of the front: the reference machine's rows that have both axes."""
    return [{"name": r["name"], "arch": r["arch"], x: r[x], y: r[y], f"{y}_ci": r.get(f"{y}_ci"), "n": r["n"],
             "params": r.get("params"), "front": bool(r["pareto"])} for r in rows if r["pareto"] is not None]


def write_files(rows: list[dict], out_dir: str | Path, x: str, y: str) -> list[str]:
    """compare.md, compare.csv, pareto.png and pareto.json (the `dvc plots` data) under out_dir."""
    out = Path(out_dir)
    write_text(out / "compare.md", to_markdown(rows))
    write_text(out / "compare.csv", to_csv(rows))
    ref = next((r for r in rows if not r.get("elsewhere")), {})
    plot_pareto(rows, out / "pareto.png", x, y, xlabel=header(x).replace(" ms", " latency (ms)"),
                machine=machine_label(ref.get("hardware")))
    write_json(out / "pareto.json", pareto_points(rows, x, y))
    return [str(out / f) for f in FILES]


# ----------------------------------------------------------------------------- terminal
def _reductions(rows: list[dict], x: str) -> list[str]:
    """The paired reductions of the x axis' backend at its smallest and largest batch size."""
    m = LATENCY_KEY.match(x)
    have = sorted({int(k.rsplit("_bs", 1)[1]) for r in rows for k in r
                   if m and k.startswith(f"reduction_{m['backend']}_bs")})
    return [f"reduction_{m['backend']}_bs{bs}" for bs in dict.fromkeys(have[:1] + have[-1:])]


def _summary_cells(r: dict, x: str, reds: list[str], y: str, machines: bool) -> list[str]:
    ci = r.get(f"{y}_ci")
    quality = f"{r[y]:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "") if r.get(y) is not None else "–"
    dci = r.get(f"{DELTA}_ci")
    delta = (f"{r[DELTA]:+.3f}" + (f" [{dci[0]:+.3f}, {dci[1]:+.3f}]" if dci else "")
             if r.get(DELTA) is not None else "–")
    faster = " / ".join(f"{r[c]:+.0%}" if r.get(c) is not None else "–" for c in reds) if r["role"] != "full" else "–"
    n = f"{r['n']}{'f' * bool(r.get('folds'))}"  # f: k-fold folds, not repeats on one split
    out = [r["name"], n, cell("params", r.get("params")), cell("macs", r.get("macs")), cell(x, r.get(x)), faster,
           quality, delta, r.get("verdict") or "–", cell("pareto", r.get("pareto"))]
    return out + ([r.get("machine") or "?"] if machines else [])


def summary_table(rows: list[dict], x: str, y: str = "test_macro_f1", width: int = SUMMARY_WIDTH) -> str:
    """The headline columns, aligned, in at most `width` columns (long names are shortened with …)."""
    reds = _reductions(rows, x)
    machines = len({r.get("machine") for r in rows}) > 1
    bs = "/".join(c.rsplit("_bs", 1)[1] for c in reds)
    heads = ["model", "n", "params M", "MMACs", header(x), f"faster bs{bs}" if reds else "faster", y.replace("_", " "),
             "Δ vs full", "verdict", "front"] + (["machine"] if machines else [])
    body = [_summary_cells(r, x, reds, y, machines) for r in rows]
    widths = [max(len(h), *(len(b[i]) for b in body)) for i, h in enumerate(heads)]
    spare = width - (sum(widths) + 2 * (len(widths) - 1))
    if spare < 0:  # only the name gives way: every number stays whole
        widths[0] = max(8, widths[0] + spare)
    right = {1, 2, 3, 4, 5}

    def line(cells: list[str]) -> str:
        fit = [c if len(c) <= w else c[:w - 1] + "…" for c, w in zip(cells, widths)]
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(fit, widths))).rstrip()

    return "\n".join([line(heads), "-" * min(width, sum(widths) + 2 * (len(widths) - 1))] + [line(b) for b in body])


def axis_line(x: str, what: str, rows: list[dict]) -> str:
    """The line above the table: which latency the x column is, and what `n` counts."""
    n = "k-fold folds (f) or training repeats" if any(r.get("folds") for r in rows) else "training repeats"
    return f"x axis: {header(x)} ({what}); n: {n} pooled per row, over seeds"


def machine_notes(rows: list[dict]) -> list[str]:
    """Which machine timed the milliseconds, and which rows were measured elsewhere."""
    ref = next((r for r in rows if not r.get("elsewhere")), None)
    notes = [f"Latency (ms) measured on {machine_label(ref.get('hardware'))}." if ref and ref.get("machine") else ""]
    others: dict[str, list[str]] = {}
    for r in rows:
        if r.get("elsewhere"):
            others.setdefault(machine_label(r.get("hardware")), []).append(r["name"])
    for label, names in others.items():
        notes.append(f"Measured on {label}: paired reductions only, no ms, not on the front: {', '.join(names)}.")
    return [n for n in notes if n]


def wrap(text: str, width: int = SUMMARY_WIDTH) -> str:
    return "\n".join(textwrap.wrap(text, width, subsequent_indent="  ", break_on_hyphens=False))


# ----------------------------------------------------------------------------- Pareto plot
def plot_pareto(rows: list[dict], path, x: str = "latency_cpu_bs1_ms", y: str = "test_macro_f1",
                xlabel: str | None = None, machine: str = "") -> None:
    """Quality vs latency of the reference machine's rows: marker area ~ params, the Pareto front drawn and
    ringed, and the 95% CI of each row's quality (`<y>_ci`: over seeds, or one seed's bootstrap) as an error bar."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elimnet.io import atomic_path

    pts = [r for r in rows if r.get("pareto") is not None]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if pts:
        _draw_points(ax, pts, x, y)
    ax.set_xlabel((xlabel or x) + (f" on {machine}" if machine else ""))
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title("quality vs latency (marker area ~ params, bars: 95% CI)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _draw_points(ax, pts: list[dict], x: str, y: str) -> None:
    pmax = max((r.get("params") or 0) for r in pts) or 1
    sizes = [30 + 470 * (r.get("params") or 0) / pmax for r in pts]
    colors = ["tab:gray" if r["role"] == "full" else "tab:blue" for r in pts]
    bars = [r for r in pts if r.get(f"{y}_ci")]
    if bars:
        ax.errorbar([r[x] for r in bars], [r[y] for r in bars],
                    yerr=[[max(r[y] - r[f"{y}_ci"][0], 0) for r in bars],
                          [max(r[f"{y}_ci"][1] - r[y], 0) for r in bars]],
                    fmt="none", ecolor="black", elinewidth=0.8, capsize=3, alpha=0.7, label="95% CI")
    ax.scatter([r[x] for r in pts], [r[y] for r in pts], s=sizes, c=colors, alpha=0.55,
               edgecolors="tab:red", linewidths=[2.0 if r.get("pareto") else 0.0 for r in pts])
    front = sorted((r for r in pts if r.get("pareto")), key=lambda r: r[x])
    if front:
        ax.step([r[x] for r in front], [r[y] for r in front], where="post", color="tab:red", lw=1.2,
                label="Pareto front")
    if front or bars:
        ax.legend(loc="lower right", fontsize=8)
    for r in pts:
        n = r.get("n")
        ax.annotate(r["name"] + (f" (n={n})" if n and n > 1 else ""), (r[x], r[y]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
