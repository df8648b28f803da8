"""Weight imprinting: a training-free proxy for accuracy, layer by layer (seed 003, ICIP 2020).

An imprinted classifier holds, for each class, the mean of the L2-normalised embeddings
(adaptively pooled feature maps) of that class's images, itself L2-normalised; a sample is
predicted as the class whose weight has the largest dot product with its embedding.

`imprint_scan` measures, in one streamed pass over the images, the proxy accuracy
- of the whole network's features,
- of the network with each candidate block skipped ("without": the LayerPrune score),
- after every block (the ICIP layer-wise accuracy curve).
The prefix up to a block is computed once and shared by every branch that starts there.
Nothing is trained and the model is left untouched.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.models.staged import StagedNet


def embed(features: torch.Tensor) -> torch.Tensor:
    """[B, C, H, W] feature maps -> [B, C] adaptively pooled, L2-normalised embeddings."""
    return F.normalize(torch.flatten(F.adaptive_avg_pool2d(features, 1), 1).float(), dim=1)


class Imprinter:
    """Streams embeddings in: first the imprinting images (class sums), then the evaluated ones."""

    def __init__(self, num_classes: int):
        self.num_classes = num_classes
        self.sums: torch.Tensor | None = None
        self.counts = torch.zeros(num_classes)
        self.weights: torch.Tensor | None = None
        self.correct = 0
        self.seen = 0

    def imprint(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        if self.sums is None:
            self.sums = torch.zeros(self.num_classes, emb.shape[1])
        self.sums.index_add_(0, labels, emb)
        self.counts += torch.bincount(labels, minlength=self.num_classes).float()

    def finish(self) -> None:
        w = F.normalize(self.sums, dim=1)
        # A class with no imprinting image can never be predicted.
        w[self.counts == 0] = float("nan")
        self.weights = w

    def predict(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(emb @ self.weights.T, nan=-float("inf")).argmax(1)

    def score(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        self.correct += int((self.predict(emb) == labels).sum())
        self.seen += int(labels.numel())

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else float("nan")


def imprint_accuracy(train_emb: torch.Tensor, train_y: torch.Tensor, val_emb: torch.Tensor,
                     val_y: torch.Tensor, num_classes: int | None = None) -> float:
    """Accuracy on (val_emb, val_y) of the classifier imprinted from (train_emb, train_y)."""
    n = num_classes or int(max(train_y.max(), val_y.max())) + 1
    imp = Imprinter(n)
    imp.imprint(F.normalize(train_emb.float(), dim=1), train_y)
    imp.finish()
    imp.score(F.normalize(val_emb.float(), dim=1), val_y)
    return imp.accuracy


@dataclass
class ScanResult:
    full: float  # accuracy of the whole network's features
    without: dict[str, float]  # candidate path -> accuracy with that block skipped
    after: dict[str, float]  # block path -> accuracy of the features right after it
    imprint_images: int
    eval_images: int


def _blocks(model: StagedNet) -> list[tuple[str, nn.Module]]:
    return [(f"stages.{si}.{bi}", b) for si, stage in enumerate(model.stages) for bi, b in enumerate(stage)]


@torch.no_grad()
def imprint_scan(model: StagedNet, imprint_split: TensorSplit, eval_split: TensorSplit, normalize: Normalizer,
                 candidates: list[str], *, num_classes: int | None = None, batch_size: int = 64,
                 device: torch.device | str = "cpu", progress: bool = True) -> ScanResult:
    if len(imprint_split) == 0 or len(eval_split) == 0:
        raise ValueError("imprinting needs a non-empty imprinting split and a non-empty evaluation split")
    n_cls = num_classes or int(max(imprint_split.labels.max(), eval_split.labels.max())) + 1
    blocks = _blocks(model)
    known = {p for p, _ in blocks}
    missing = [c for c in candidates if c not in known]
    if missing:
        raise ValueError(f"imprint: no block at {', '.join(missing)}")
    cand = set(candidates)
    heads = {"full": Imprinter(n_cls)}
    heads.update({("without", p): Imprinter(n_cls) for p in candidates})
    heads.update({("after", p): Imprinter(n_cls) for p, b in blocks if not isinstance(b, nn.Identity)})

    def tail(x: torch.Tensor, start: int) -> torch.Tensor:
        for _, b in blocks[start:]:
            x = b(x)
        return embed(model.neck(model.head(x)))

    def run(split: TensorSplit, phase: str, bar) -> None:
        for x, y in iterate_batches(split, batch_size, normalize):
            out: dict = {}
            x = model.stem(x.to(device))
            for i, (path, block) in enumerate(blocks):
                if path in cand:  # branch: everything after this block, on this block's input
                    out[("without", path)] = tail(x, i + 1)
                x = block(x)
                if ("after", path) in heads:
                    out[("after", path)] = embed(x)
            out["full"] = embed(model.neck(model.head(x)))
            for key, emb in out.items():
                emb = emb.cpu()
                heads[key].imprint(emb, y) if phase == "imprint" else heads[key].score(emb, y)
            bar.update(len(y))

    was = model.training
    model.eval()
    try:
        with tqdm(total=len(imprint_split) + len(eval_split), desc="imprint", unit="img",
                  disable=not progress, mininterval=1.0, leave=False) as bar:
            run(imprint_split, "imprint", bar)
            for h in heads.values():
                h.finish()
            run(eval_split, "score", bar)
    finally:
        model.train(was)
    return ScanResult(full=heads["full"].accuracy,
                      without={p: heads[("without", p)].accuracy for p in candidates},
                      after={k[1]: h.accuracy for k, h in heads.items() if isinstance(k, tuple) and k[0] == "after"},
                      imprint_images=len(imprint_split), eval_images=len(eval_split))
