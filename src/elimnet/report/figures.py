"""Figures: confusion matrices (MLflow artifacts) and the Pareto plot of `elimnet compare`."""
from __future__ import annotations


def confusion_figure(confusion: list[list[int]], classes: list[str], title: str = "confusion"):
    """A matplotlib Figure of a confusion matrix (rows: actual, columns: predicted), counts annotated."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    cm = np.asarray(confusion)
    n = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 + 0.6 * n, 1.0 + 0.6 * n))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(n), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=9)
    hi = cm.max() if cm.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if cm[i, j] > hi / 2 else "black")
    fig.tight_layout()
    return fig


def plot_pareto(rows: list[dict], path, x: str = "latency_cpu_bs1_ms", y: str = "test_macro_f1",
                xlabel: str | None = None) -> None:
    """Quality vs latency: marker area ~ params, the Pareto front drawn and ringed, and the 95% CI of
    each row's quality (`<y>_ci`: over seeds, or one seed's bootstrap) as a vertical error bar."""
    import math

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from elimnet.io import atomic_path

    def num(v):
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    pts = [r for r in rows if num(r.get(x)) and num(r.get(y))]
    fig, ax = plt.subplots(figsize=(7.5, 5))
    if pts:
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
    ax.set_xlabel(xlabel or x)
    ax.set_ylabel(y.replace("_", " "))
    ax.set_title("quality vs latency (marker area ~ params, bars: 95% CI)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


# 960 x 300 px at dpi 100: the three panels fit one laptop screen, in `dvc plots show` and in MLflow.
CURVES_SIZE_IN, CURVES_DPI = (9.6, 3.0), 100


def curves_figure(histories: dict[str, list[dict]]):
    """Loss, accuracy and macro-F1 per epoch (train dashed, val solid) for each role, side by side."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=CURVES_SIZE_IN, dpi=CURVES_DPI)
    for role, rows in histories.items():
        ep = [r["epoch"] for r in rows]
        for ax, key in zip(axes, ("loss", "acc", "macro_f1")):
            ax.plot(ep, [r[f"train_{key}"] for r in rows], "--", label=f"{role} train")
            ax.plot(ep, [r[f"val_{key}"] for r in rows], "-", marker="o", ms=3, label=f"{role} val")
            ax.set_title(key, fontsize=9)
            ax.set_xlabel("epoch", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def save_curves(histories: dict[str, list[dict]], path) -> None:
    """curves_figure as a PNG at `path` (atomically: DVC never sees half a file)."""
    import matplotlib.pyplot as plt

    from elimnet.io import atomic_path

    fig = curves_figure(histories)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=CURVES_DPI)
    plt.close(fig)
