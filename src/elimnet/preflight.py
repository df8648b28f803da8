"""Checks that need only params, the architecture or the file system, run by the `params` stage: a value
the schema accepts but a later stage would refuse fails here, before DVC deletes any output.

- `model.prune.k` against the removal candidates of the arch (after model.elim/neck);
- `data.name=folder`: `data.path` must be an existing folder;
- network inputs (dataset downloads, hub weights): cached, or their host answers a TCP connect within
  PROBE_TIMEOUT_S; else one line naming the offline alternative. `ELIMNET_OFFLINE=1` treats every host as
  unreachable (to see what a run needs from the network; the tests use it).

Every failure is one ElimnetError line that starts with the keys at fault (`key=value[, key=value]: why`), so
the params stage can put exactly those keys back.
"""
from __future__ import annotations

import os
import socket
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

from elimnet.errors import ConfigError, DownloadError

PROBE_TIMEOUT_S = 3.0
OFFLINE_ENV = "ELIMNET_OFFLINE"
WEIGHTS_OFFLINE = "offline, use model.weights=none, or model.arch=efficientnet_lite0 (its weights ship in a PyPI package)"


@dataclass(frozen=True)
class NetworkInput:
    keys: str  # "data.name=imagenette": the params that ask for it, as the error line names them
    url: str
    cached: bool
    offline: str  # what runs without the network
    stage: str = ""  # the dvc.yaml stage that downloads it


def run_preflight(cfg, stale_stages: set[str] | None = None) -> None:
    """Raise the first failing check's one-line error; return quietly when all pass. Network inputs are
    checked only for `stale_stages` (None: all), the stages whose params changed since dvc.lock: an
    up-to-date stage will not download, so offline work on a cached experiment stays possible."""
    check_prune_k(cfg)
    check_data_path(cfg)
    for need in network_inputs(cfg):
        if stale_stages is None or need.stage in stale_stages:
            check_reachable(need)


# ----------------------------------------------------------------------------- structure
def removal_candidates(cfg) -> int:
    """How many blocks LayerPrune could remove: built from params alone (random init, no data), with the
    compressions that run before LayerPrune (model.elim, model.neck) applied as the compress stage does."""
    import torch

    from elimnet.compress import CompressContext, TRANSFORMS, ordered, plan_and_apply
    from elimnet.compress.layerprune import candidates
    from elimnet.models import create_model, get_spec
    from elimnet.models.registry import params_arch_args

    prune_order = TRANSFORMS["layerprune"].order
    later_off = {k: v for t in ordered() if t.off and t.order >= prune_order for k, v in t.off.items()}
    arch, spec = cfg["model.arch"], get_spec(cfg["model.arch"])
    torch.manual_seed(cfg["seed"])
    base = create_model(arch, pretrained=False, arch_args=params_arch_args(arch, cfg))
    ctx = CompressContext(arch=arch, image_size=cfg["data.image_size"], num_classes=2, seed=cfg["seed"],
                          mean=spec.mean, std=spec.std)  # the class count does not change the blocks
    model, _ = plan_and_apply(base, cfg.replace(**later_off), ctx)
    return len(candidates(model, ctx.image_size))


def check_prune_k(cfg) -> None:
    k = cfg["model.prune.k"]
    if not k:
        return
    n = removal_candidates(cfg)
    if k > n:
        raise ConfigError(f"model.prune.k={k}: must be <= {n}, the removal candidates (blocks whose output shape "
                          f"equals their input shape) of {cfg['model.arch']} after model.elim={cfg['model.elim']}")


def check_data_path(cfg) -> None:
    if cfg["data.name"] != "folder":
        return
    path = cfg["data.path"]
    if not path or not Path(path).is_dir():
        raise ConfigError(f"data.name=folder, data.path={path}: data.path must be an existing folder in "
                          f"ImageFolder layout (<class>/<image>)")


# ----------------------------------------------------------------------------- network
def network_inputs(cfg) -> list[NetworkInput]:
    """What the run would fetch: the data source's files and the backbone's weights, with cache state."""
    return [need for need in (_data_input(cfg), _weights_input(cfg)) if need is not None]


def _data_input(cfg) -> NetworkInput | None:
    from elimnet.data import fashion_mnist, imagenette, taco
    from elimnet.data.download import OFFLINE_HINT

    name, root = cfg["data.name"], Path(cfg["data.root"])
    if name == "imagenette":
        url, _ = imagenette.ARCHIVES[str(cfg["data.variant"])]
        folder = root / "imagenette" / Path(url).name.removesuffix(".tgz")
        cached = (folder / ".complete").exists() or (root / "imagenette" / Path(url).name).is_file()
        return NetworkInput("data.name=imagenette", url, cached, OFFLINE_HINT, "prepare")
    if name == "taco":
        cached = (root / "taco" / "annotations.json").is_file()
        return NetworkInput("data.name=taco", taco.ANNOTATIONS_URLS[0], cached, OFFLINE_HINT, "prepare")
    if name == "fashion_mnist":
        files = fashion_mnist.FILES
        cached = all((fashion_mnist.DEBIAN_DIR / f).is_file() or (root / "fashion_mnist" / f).is_file()
                     for f in files)
        return NetworkInput("data.name=fashion_mnist", fashion_mnist.MIRRORS[0], cached,
                            OFFLINE_HINT + " Or: apt-get install dataset-fashion-mnist.", "prepare")
    return None  # elpv ships in a PyPI package; folder is local


def _weights_input(cfg) -> NetworkInput | None:
    from elimnet.models import get_spec

    arch = cfg["model.arch"]
    spec = get_spec(arch)
    if cfg["model.weights"] != "imagenet" or not spec.weights_url:
        return None
    cache = Path(cfg["data.root"]) / "weights"
    keys = f"model.arch={arch}, model.weights=imagenet"
    return NetworkInput(keys, spec.weights_url, _weights_cached(arch, spec, cache), WEIGHTS_OFFLINE, "pretrained")


def _weights_cached(arch: str, spec, cache: Path) -> bool:
    """The weights file is in the cache the pretrained stage reads (data.root/weights)."""
    if arch.startswith("timm/"):  # hub snapshots: <cache>/hf/models--<org>--<name>/snapshots/<rev>/<file>
        from elimnet.models.timm_adapter import WEIGHTS_FILE

        repo = (spec.weights_name or "").split("@")[0]
        snapshots = cache / "hf" / f"models--{repo.replace('/', '--')}" / "snapshots"
        return bool(repo) and any(snapshots.glob(f"*/{WEIGHTS_FILE}"))
    names = {Path(urllib.parse.urlparse(spec.weights_url).path).name, spec.weights_name or ""}  # RedNet: its name
    return any(name and (cache / name).is_file() for name in names)


def host_unreachable(url: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why `url`'s host cannot be reached (DNS or TCP connect within `timeout_s`), or None when it can."""
    if os.environ.get(OFFLINE_ENV, "") not in ("", "0"):
        return f"{OFFLINE_ENV} is set"
    parts = urllib.parse.urlparse(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        socket.create_connection((parts.hostname, port), timeout=timeout_s).close()
    except OSError as e:  # gaierror, refused, timeout
        return f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    return None


def check_reachable(need: NetworkInput) -> None:
    if need.cached:
        return
    why = host_unreachable(need.url)
    if why:
        host = urllib.parse.urlparse(need.url).hostname
        raise DownloadError(f"{need.keys}: needs {need.url}, not cached, and {host} is unreachable "
                            f"({why}; probed for at most {PROBE_TIMEOUT_S:g} s). {need.offline}")
