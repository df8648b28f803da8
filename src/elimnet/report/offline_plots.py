"""An HTML template for `dvc plots show` that carries vega, vega-lite and vega-embed inline.

DVC's default page loads the three scripts from a CDN, so offline every vega plot (history, confusion
matrices, layer importance, Pareto) is blank. `make setup` installs the pinned scripts from the npm
registry and runs this module; `dvc config --local plots.html_template plots.html` then points DVC at
the result (.dvc/plots.html, git-ignored). Inlined rather than linked: the page works wherever
`dvc plots show -o DIR` writes it.

    python -m elimnet.report.offline_plots NODE_MODULES_DIR OUT_HTML
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from elimnet.io import atomic_path

# Order matters: vega-embed expects the globals `vega` and `vegaLite`.
SCRIPTS = ("vega/build/vega.min.js", "vega-lite/build/vega-lite.min.js", "vega-embed/build/vega-embed.min.js")

# DVC's page (dvc_render.html.PAGE_HTML) without its {scripts} placeholder (the CDN tags), plus ours.
PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
%s
    <style>
        table {
            border-spacing: 15px;
        }
        img {
            max-width: 100%%;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def build_template(node_modules: str | Path, out: str | Path) -> Path:
    """Write the template with the three scripts inline; raise FileNotFoundError naming a missing one."""
    node_modules = Path(node_modules)
    tags = []
    for rel in SCRIPTS:
        path = node_modules / rel
        if not path.is_file():
            raise FileNotFoundError(f"{path}: missing; install vega, vega-lite and vega-embed (make setup)")
        js = path.read_text(encoding="utf8")
        # A literal "</script" inside the code would end the tag early; "<\/" means the same in JS.
        tags.append(f"<script>/* {rel} */\n{js.replace('</script', '<' + chr(92) + '/script')}\n</script>")
    out = Path(out)
    with atomic_path(out) as tmp:  # utf-8 whatever the locale: the scripts are not ASCII
        tmp.write_text(PAGE % "\n".join(tags), encoding="utf8")
        tmp.chmod(0o644)  # a page like any other, not a private temp file
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("node_modules", help="folder holding vega/, vega-lite/ and vega-embed/")
    ap.add_argument("out", help="HTML template to write")
    args = ap.parse_args(argv)
    try:
        build_template(args.node_modules, args.out)
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
