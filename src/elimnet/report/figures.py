"""Figures of one run: confusion matrices and training curves (MLflow artifacts, `dvc plots`).

The Pareto plot of `elimnet compare` is drawn in report.render."""
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
