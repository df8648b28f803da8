"""Weight imprinting: a training-free proxy for accuracy, layer by layer (seed 003, ICIP 2020).

An embedding is a pooled feature map, in one of two proxies (`model.prune.imprint_proxy`):
- `grid` (the authors' imprinting code, the default): each feature map is average-pooled to a
  grid of side round(sqrt(512 / C)), so every layer gives about 512 features, and is not
  normalised per sample; LayerPrune imprints from the whole training split;
- `gap_l2` (this project's earlier proxy): global average pool, L2-normalised per sample;
  LayerPrune imprints from `model.prune.batches` x 32 training images.
An imprinted classifier holds one weight per class, the mean of that class's embeddings, and
predicts the class whose weight has the largest dot product with an image's embedding. Two variants:
- normalised means (Qi et al., CVPR 2018): each class mean is L2-normalised, so every class
  competes on direction alone. This is the variant LayerPrune scores with;
- raw means (the seed's formula, W[:, c] = mean of E_j): a class whose embeddings spread more
  has a shorter mean and is predicted less often. Measured alongside, reported as `*_raw`.

`imprint_scan` measures, in one streamed pass over the images, the proxy accuracy
- after the stem and after every block (the ICIP layer-wise accuracy curve),
- of the whole network's features,
- optionally with each candidate block skipped (the ablation rule, `imprint_ablation`).
The prefix up to a block is computed once and shared by every branch that starts there.
Nothing is trained and the model is left untouched.

`fit_head` returns a copy of a model whose classifier is imprinted from training images, so
that criteria reading a loss (taylor) see a fitted head instead of a freshly initialised one.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from elimnet.data.tensors import Normalizer, TensorSplit, iterate_batches
from elimnet.models.staged import StagedNet, eval_mode

VARIANTS = ("normalized", "raw")  # class means L2-normalised (Qi et al.) or not (the seed's formula)
PROXIES = ("grid", "gap_l2")  # embeddings: the authors' ~512-feature grid, or global pool + L2 (see above)
GRID_FEATURES = 512  # features per layer the grid proxy aims at (the authors' `target`)
HEAD_SCALE = 10.0  # logit scale of the imprinted cosine head: softmax neither flat nor one-hot


def grid_side(channels: int, features: int = GRID_FEATURES) -> int:
    """Side of the pooled grid that leaves about `features` values for `channels` maps (at least 1)."""
    return max(1, round(math.sqrt(features / channels)))


def embed(features: torch.Tensor, proxy: str = "gap_l2") -> torch.Tensor:
    """[B, C, H, W] feature maps (or [B, C] pooled) -> [B, D] embeddings of the given proxy:
    `gap_l2` D = C, L2-normalised; `grid` D = C * grid_side(C)**2 (maps already 1x1 stay so), raw."""
    if proxy not in PROXIES:
        raise ValueError(f"imprint proxy {proxy!r}: must be one of {', '.join(PROXIES)}")
    if features.dim() == 4:
        side = grid_side(features.shape[1]) if proxy == "grid" and features.shape[-1] > 1 else 1
        features = F.adaptive_avg_pool2d(features, side)
    flat = torch.flatten(features, 1).float()
    return F.normalize(flat, dim=1) if proxy == "gap_l2" else flat


class Imprinter:
    """Streams embeddings in: first the imprinting images (class sums), then the evaluated ones."""

    def __init__(self, num_classes: int, normalize_means: bool = True):
        self.num_classes = num_classes
        self.normalize_means = normalize_means
        self.sums: torch.Tensor | None = None
        self.counts = torch.zeros(num_classes)
        self.weights: torch.Tensor | None = None
        self.correct = 0
        self.seen = 0
        self.predicted = torch.zeros(num_classes)  # how often each class was predicted
        self.actual = torch.zeros(num_classes)  # how often each class was the label

    def imprint(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        if self.sums is None:
            self.sums = torch.zeros(self.num_classes, emb.shape[1])
        self.sums.index_add_(0, labels, emb)
        self.counts += torch.bincount(labels, minlength=self.num_classes).float()

    def finish(self) -> None:
        means = self.sums / self.counts.clamp(min=1).unsqueeze(1)
        w = F.normalize(means, dim=1) if self.normalize_means else means
        # A class with no imprinting image can never be predicted.
        w[self.counts == 0] = float("nan")
        self.weights = w

    def predict(self, emb: torch.Tensor) -> torch.Tensor:
        return torch.nan_to_num(emb @ self.weights.T, nan=-float("inf")).argmax(1)

    def score(self, emb: torch.Tensor, labels: torch.Tensor) -> None:
        pred = self.predict(emb)
        self.correct += int((pred == labels).sum())
        self.seen += int(labels.numel())
        self.predicted += torch.bincount(pred, minlength=self.num_classes).float()
        self.actual += torch.bincount(labels, minlength=self.num_classes).float()

    @property
    def chance(self) -> float:
        """Expected accuracy of guessing with this classifier's class frequencies, ignoring the image:
        sum_c P(label c) P(predict c). 1/C for a balanced guesser, the majority share for a constant one."""
        return float((self.predicted / self.seen * self.actual / self.seen).sum()) if self.seen else float("nan")

    @property
    def accuracy(self) -> float:
        return self.correct / self.seen if self.seen else float("nan")


def imprint_accuracy(train_emb: torch.Tensor, train_y: torch.Tensor, val_emb: torch.Tensor,
                     val_y: torch.Tensor, num_classes: int | None = None, normalize_means: bool = True) -> float:
    """Accuracy on (val_emb, val_y) of the classifier imprinted from (train_emb, train_y)."""
    n = num_classes or int(max(train_y.max(), val_y.max())) + 1
    imp = Imprinter(n, normalize_means)
    imp.imprint(F.normalize(train_emb.float(), dim=1), train_y)
    imp.finish()
    imp.score(F.normalize(val_emb.float(), dim=1), val_y)
    return imp.accuracy


@dataclass
class ScanResult:
    full: float  # accuracy of the whole network's features (normalised means)
    after: dict[str, float]  # "stem" or block path -> accuracy of the features right after it
    imprint_images: int
    eval_images: int
    without: dict[str, float] = field(default_factory=dict)  # candidate -> accuracy with it skipped (ablation)
    full_raw: float = float("nan")  # the same three with raw class means
    after_raw: dict[str, float] = field(default_factory=dict)
    without_raw: dict[str, float] = field(default_factory=dict)
    chance: float = float("nan")  # the full net's classifier's chance level (Imprinter.chance)


def blocks_of(model: StagedNet) -> list[tuple[str, nn.Module]]:
    return [(f"stages.{si}.{bi}", b) for si, stage in enumerate(model.stages) for bi, b in enumerate(stage)]


def preceding(model: StagedNet, path: str) -> str:
    """The layer before block `path` in model order: the previous kept block, or "stem"."""
    prev = "stem"
    for p, b in blocks_of(model):
        if p == path:
            return prev
        if not isinstance(b, nn.Identity):
            prev = p
    raise ValueError(f"imprint: no block at {path}")


@torch.no_grad()
def imprint_scan(model: StagedNet, imprint_split: TensorSplit, eval_split: TensorSplit, normalize: Normalizer,
                 candidates: list[str], *, num_classes: int | None = None, batch_size: int = 64,
                 ablation: bool = True, device: torch.device | str = "cpu", progress: bool = True,
                 proxy: str = "gap_l2") -> ScanResult:
    """Layer-wise imprinted accuracies (and, with `ablation`, each candidate skipped), both variants,
    on embeddings of the given `proxy`."""
    if len(imprint_split) == 0 or len(eval_split) == 0:
        raise ValueError("imprinting needs a non-empty imprinting split and a non-empty evaluation split")
    n_cls = num_classes or int(max(imprint_split.labels.max(), eval_split.labels.max())) + 1
    blocks = blocks_of(model)
    known = {p for p, _ in blocks}
    missing = [c for c in candidates if c not in known]
    if missing:
        raise ValueError(f"imprint: no block at {', '.join(missing)}")
    cand = set(candidates) if ablation else set()
    keys: list = ["full", ("after", "stem")]
    keys += [("without", p) for p in candidates if p in cand]
    keys += [("after", p) for p, b in blocks if not isinstance(b, nn.Identity)]
    heads = {(v, k): Imprinter(n_cls, v == "normalized") for v in VARIANTS for k in keys}

    def tail(x: torch.Tensor, start: int) -> torch.Tensor:
        for _, b in blocks[start:]:
            x = b(x)
        return embed(model.neck(model.head(x)), proxy)

    def run(split: TensorSplit, phase: str, bar) -> None:
        for x, y in iterate_batches(split, batch_size, normalize):
            x = model.stem(x.to(device))
            out: dict = {("after", "stem"): embed(x, proxy)}
            for i, (path, block) in enumerate(blocks):
                if path in cand:  # branch: everything after this block, on this block's input
                    out[("without", path)] = tail(x, i + 1)
                x = block(x)
                if not isinstance(block, nn.Identity):
                    out[("after", path)] = embed(x, proxy)
            out["full"] = embed(model.neck(model.head(x)), proxy)
            for key, emb in out.items():
                emb = emb.cpu()
                for v in VARIANTS:
                    h = heads[(v, key)]
                    h.imprint(emb, y) if phase == "imprint" else h.score(emb, y)
            bar.update(len(y))

    with eval_mode(model), tqdm(total=len(imprint_split) + len(eval_split), desc="imprint", unit="img",
                                disable=not progress, mininterval=1.0, leave=False) as bar:
        run(imprint_split, "imprint", bar)
        for h in heads.values():
            h.finish()
        run(eval_split, "score", bar)

    def pick(v: str, kind: str) -> dict[str, float]:
        return {k[1]: h.accuracy for (vv, k), h in heads.items() if vv == v and isinstance(k, tuple) and k[0] == kind}
    return ScanResult(full=heads[("normalized", "full")].accuracy, after=pick("normalized", "after"),
                      without=pick("normalized", "without"), full_raw=heads[("raw", "full")].accuracy,
                      after_raw=pick("raw", "after"), without_raw=pick("raw", "without"),
                      imprint_images=len(imprint_split), eval_images=len(eval_split),
                      chance=heads[("normalized", "full")].chance)


# ----------------------------------------------------------------------------- a fitted head
class ImprintedHead(nn.Module):
    """Cosine classifier: HEAD_SCALE * normalise(features) . normalise(class mean)."""

    def __init__(self, weights: torch.Tensor, scale: float = HEAD_SCALE):
        super().__init__()
        self.register_buffer("weight", F.normalize(weights.float(), dim=1))
        self.scale = scale

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.scale * F.normalize(pooled, dim=1) @ self.weight.T


@torch.no_grad()
def fit_head(model: StagedNet, split: TensorSplit, normalize: Normalizer, num_classes: int, *,
             batch_size: int = 32, device: torch.device | str = "cpu") -> StagedNet:
    """A copy of `model` whose classifier is imprinted from `split` (the model is untouched).

    Classes absent from `split` get a zero weight (logit 0), so the loss stays finite."""
    fitted = copy.deepcopy(model)
    sums, counts = None, torch.zeros(num_classes)
    with eval_mode(fitted):
        for x, y in iterate_batches(split, batch_size, normalize):
            emb = embed(fitted.forward_pooled(x.to(device))).cpu()
            sums = torch.zeros(num_classes, emb.shape[1]) if sums is None else sums
            sums.index_add_(0, y, emb)
            counts += torch.bincount(y, minlength=num_classes).float()
    fitted.classifier = nn.Sequential(ImprintedHead(sums / counts.clamp(min=1).unsqueeze(1))).to(device)
    return fitted
