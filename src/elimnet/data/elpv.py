"""elpv: 2,624 electroluminescence photos of solar cells (300x300 grayscale), PyPI `elpv-dataset`.

Classes are the four annotated defect probabilities 0, 1/3, 2/3, 1. Licence: CC BY-NC-SA 4.0.
"""
from __future__ import annotations

from pathlib import Path

from elimnet.errors import DataError
from elimnet.data.sources import Sample, SourceData, open_path, register_source

ELPV_CLASSES = ["p0.00", "p0.33", "p0.67", "p1.00"]


def elpv_root() -> Path:
    try:
        import elpv_dataset
    except ImportError as e:  # pragma: no cover - requirements.txt installs it
        raise DataError("elpv-dataset is not installed: pip install elpv-dataset==1.0.0.post1") from e
    return Path(elpv_dataset.__file__).parent / "data"


@register_source("elpv")
def elpv_source(cfg=None, root: Path | None = None) -> SourceData:
    root = root or elpv_root()
    samples = []
    for line in (root / "labels.csv").read_text().splitlines():
        if not line.strip():
            continue
        rel, prob, kind = line.split()
        label = min(range(4), key=lambda i: abs(float(prob) - i / 3))
        samples.append(Sample(open_path(root / rel), label, rel, None))
    return SourceData("elpv", list(ELPV_CLASSES), samples, channels=1,
                      license="CC BY-NC-SA 4.0 (Buerhop-Lutz et al.; Deitsch et al.)")
