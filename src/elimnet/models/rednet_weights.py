"""RedNet ImageNet weights: the authors' released mmcls checkpoints, fetched, verified and key-mapped.

The involution authors (d-li14/involution, built on OpenMMLab's mmcls) release one `.pth` per
depth: an mmcls checkpoint `{"meta": ..., "state_dict": {"backbone.*", "head.fc.*"}}`.
- Checksum: where the released file name carries torch.hub's sha256 prefix (`rednet26-4948f75f.pth`)
  that prefix is verified; otherwise the file's sha256 is recorded beside it on first download
  (`<file>.sha256`, trust on first use) and verified on every later use.
- URL: the authors host the files on Google Drive / Baidu Pan share pages, which give no stable
  direct link; a release whose `url` is None is looked for in the weights cache
  (`data/raw/weights/<file name>`, put there by hand once) and verified the same way.
- Keys: `map_mmcls_keys` renames the mmcls names onto this package's modules, every shape checked.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from elimnet.errors import CheckpointError, DownloadError
from elimnet.models.weights import HASH_RE


@dataclass(frozen=True)
class Release:
    filename: str
    url: str | None = None  # None: no direct link published; the file is expected in the cache

    @property
    def sha256_prefix(self) -> str | None:
        m = HASH_RE.search(self.filename)
        return m.group(1) if m else None


# The released file names as the authors' checkpoints are named in public code that loads them.
RELEASES: dict[str, Release] = {
    "rednet26": Release("rednet26-4948f75f.pth"),
    "rednet38": Release("rednet38.pth"),
    "rednet50": Release("rednet50-1c7a7c5d.pth"),
    "rednet101": Release("rednet101.pth"),
    "rednet152": Release("rednet152.pth"),
}

# Passed to the downloader; tests shorten the retries.
DOWNLOAD_OPTIONS: dict = {"retries": 4, "backoff_s": 1.0, "progress": True}

# mmcls name -> this package's name, applied in order (see models/rednet.py and models/involution.py).
_KEY_RULES: list[tuple[re.Pattern, str]] = [(re.compile(p), r) for p, r in (
    (r"^backbone\.", ""),
    (r"^head\.fc\.", "classifier.0."),
    (r"^layer(\d+)\.", lambda m: f"stages.{int(m.group(1)) - 1}."),
    (r"^stem\.(0|4)\.conv\.", r"stem.\1.0."),  # ConvModule(conv, bn, activate) -> Sequential(0, 1, 2)
    (r"^stem\.(0|4)\.bn\.", r"stem.\1.1."),
    (r"\.conv1\.conv\.", ".reduce.0."),  # involution: conv1 = reduce (conv, bn, relu)
    (r"\.conv1\.bn\.", ".reduce.1."),
    (r"\.conv2\.conv\.", ".span."),  # involution: conv2 = span (conv with bias)
)]


def map_mmcls_key(key: str) -> str:
    for pattern, repl in _KEY_RULES:
        key = pattern.sub(repl, key)
    return key


def map_mmcls_keys(model: nn.Module, source: dict[str, torch.Tensor], where: str = "checkpoint"
                   ) -> dict[str, torch.Tensor]:
    """An mmcls RedNet state_dict renamed onto `model`; refuses missing, extra or misshaped entries."""
    target = model.state_dict()
    mapped = {map_mmcls_key(k): v for k, v in source.items()}
    missing = [k for k in target if k not in mapped]
    extra = [k for k in mapped if k not in target]
    if missing or extra:
        what = f"missing {missing[:3]}" if missing else f"unexpected {extra[:3]}"
        raise CheckpointError(f"{where}: does not fit this RedNet ({len(missing)} missing, {len(extra)} unexpected "
                              f"keys; {what}); is it an mmcls RedNet checkpoint of the same depth?")
    for k, v in target.items():
        if tuple(mapped[k].shape) != tuple(v.shape):
            raise CheckpointError(f"{where}: {k} has shape {tuple(mapped[k].shape)}, this RedNet expects "
                                  f"{tuple(v.shape)}; is it a checkpoint of the same depth?")
    return {k: mapped[k] for k in target}


def fetch_rednet(arch: str, cache_dir: str | Path) -> Path:
    """The verified release file of `arch` in `cache_dir` (downloaded once where a URL is pinned)."""
    from elimnet.data.download import download, sha256_file  # lazy: models/ stays free of data/

    release = RELEASES[arch]
    dest = Path(cache_dir) / release.filename
    pin = dest.with_name(dest.name + ".sha256")  # trust on first use, where the name carries no hash
    prefix = release.sha256_prefix
    recorded = pin.read_text().strip() if (prefix is None and pin.exists()) else None
    if release.url is None:
        if not dest.exists():
            raise DownloadError(f"model.arch={arch} with model.weights=imagenet: no direct download link is pinned "
                                f"for {release.filename} (the authors share it on Google Drive / Baidu Pan); "
                                f"save it as {dest} and rerun, or use model.weights=none")
        digest = sha256_file(dest)
        if prefix and not digest.startswith(prefix):
            raise CheckpointError(f"{dest}: sha256 {digest} does not start with {prefix} (from its release name); "
                                  "delete it and save the released file again")
        if recorded and digest != recorded:
            raise CheckpointError(f"{dest}: sha256 {digest} differs from {recorded} recorded in {pin} on first use; "
                                  f"delete both files to trust a new copy")
    else:
        hint = (f"model.arch={arch} with model.weights=imagenet needs {release.filename} from the internet; "
                "offline, use model.weights=none.")
        download(release.url, dest, sha256_prefix=prefix, sha256=recorded, offline_hint=hint, **DOWNLOAD_OPTIONS)
    if prefix is None and not pin.exists():
        pin.write_text(sha256_file(dest) + "\n")
    return dest


def load_rednet_pretrained(arch: str, model: nn.Module, cache_dir: str | Path) -> nn.Module:
    path = fetch_rednet(arch, cache_dir)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - a truncated or foreign file: one line, not a traceback
        raise CheckpointError(f"{path}: not a loadable weights_only torch file ({type(e).__name__}); "
                              "delete it and fetch it again") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: holds no state_dict")
    model.load_state_dict(map_mmcls_keys(model, state, str(path)))
    return model
