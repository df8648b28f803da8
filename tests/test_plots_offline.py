"""`dvc plots show` renders every vega plot offline, in a real browser (headless Chromium, every host
name unresolvable), from the template `make setup` builds. Skips with its reason when Chromium or the
npm-installed scripts (make setup) are missing."""
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from conftest import ROOT, hermetic_repo
from elimnet.report.offline_plots import SCRIPTS, build_template

NODE_MODULES = Path(os.environ.get("ELIMNET_PLOTS_JS", ROOT / ".plots-js" / "node_modules"))
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


def _chromium(*args: str) -> str:
    with tempfile.TemporaryDirectory() as profile:
        out = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                              "--disable-component-update", "--disable-sync", "--no-first-run",
                              f"--user-data-dir={profile}", "--host-resolver-rules=MAP * ~NOTFOUND",
                              "--virtual-time-budget=20000", *args],
                             capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def _vega_plots(html: Path) -> int:
    return html.read_text(encoding="utf8").count("vegaEmbed(")


@pytest.fixture(scope="module")
def plots_page(tmp_path_factory):
    """HEAD's committed metrics rendered by `dvc plots show` with the offline template and with DVC's default."""
    if not all((NODE_MODULES / rel).is_file() for rel in SCRIPTS):
        pytest.skip(f"offline plots check skipped: no vega scripts in {NODE_MODULES} (run `make setup`, needs npm)")
    repo = hermetic_repo(tmp_path_factory.mktemp("repo"))
    template = build_template(NODE_MODULES, tmp_path_factory.mktemp("tpl") / "plots.html")
    out = tmp_path_factory.mktemp("html")
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    for name, extra in (("offline", ["--html-template", str(template)]), ("cdn", [])):
        run = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(out / name), *extra],
                             cwd=repo, env=env, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stderr
    return out


def test_template_inlines_the_scripts_and_no_cdn(plots_page):
    page = (plots_page / "offline/index.html").read_text(encoding="utf8")
    assert "cdn.jsdelivr.net" not in page and "<script src=" not in page
    assert _vega_plots(plots_page / "offline/index.html") >= 6  # history x3, confusion x2, Pareto (+ importance)


@pytest.mark.skipif(CHROMIUM is None, reason="offline plots check skipped: no chromium on PATH "
                                             "(apt-get install chromium)")
def test_every_vega_plot_renders_offline_in_chromium(plots_page):
    page = plots_page / "offline/index.html"
    dom = _chromium("--dump-dom", page.as_uri())
    # vega-embed draws each plot into a <canvas> inside its div: one per plot, none if a script is missing.
    assert len(re.findall(r"<canvas", dom)) == _vega_plots(page), dom[-2000:]
    # The CDN page, with no network, draws none: the check can fail.
    assert "<canvas" not in _chromium("--dump-dom", (plots_page / "cdn/index.html").as_uri())
    shot = plots_page / "offline.png"
    _chromium("--window-size=1400,1800", f"--screenshot={shot}", page.as_uri())
    assert shot.stat().st_size > 20_000  # a blank page is a few kB
    print(f"screenshot: {shot}")


# A 1x1 PNG.
_TINY_PNG = bytes.fromhex("89504e470d0a1a0a0000000d49484452000000010000000108060000001f15c4890000000d49444154789c6360"
                          "0000000200015e2ad1400000000049454e44ae426082")


def test_plots_show_is_quiet_with_layerprune_off(tmp_path):
    """The compress stage's importance file with LayerPrune off (written by the code, not the committed one):
    `dvc plots show` draws every plot, the importance one empty, and prints no warning."""
    import json

    from elimnet.compress.layerprune import importance_file

    repo = hermetic_repo(tmp_path / "repo")
    (repo / "metrics/layer_importance.json").write_text(json.dumps(importance_file([{"name": "elim"}])) + "\n")
    (repo / "plots").mkdir(exist_ok=True)  # the report stage's image (git-ignored): any PNG will do
    (repo / "plots/curves.png").write_bytes(_TINY_PNG)
    env = dict(os.environ, DVC_NO_ANALYTICS="1")
    run = subprocess.run([sys.executable, "-m", "dvc", "plots", "show", "-o", str(tmp_path / "html")],
                         cwd=repo, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    said = [line for line in (run.stdout + run.stderr).splitlines()
            if any(w in line.lower() for w in ("warning", "error", "failed"))]
    assert said == [], run.stdout + run.stderr
    page = (tmp_path / "html/index.html").read_text(encoding="utf8")
    assert "vegaEmbed('#metrics_layer_importance_json'" in page
