"""An HTML template for `dvc plots show` that loads nothing from the internet.

DVC's own page loads Vega, Vega-Lite and Vega-Embed from a CDN (its `{scripts}` placeholder),
so without internet access it shows blank plots. This template has no `{scripts}`
placeholder: it inlines the same libraries from the copies Snakemake ships for its reports
(`snakemake/assets/data/`, BSD-3-Clause, licences kept beside each). `.dvc/config` names it
(`plots.html_template = plots/offline.html`), so a plain `dvc plots show` uses it. `pag
dvc-yaml` writes it where it is missing; `pag dvc-yaml --offline-html` writes it again.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from pag.errors import PagError

LIBRARIES = ("vega/vega.js", "vega-lite/vega-lite.js", "vega-embed/vega-embed.js")

PAGE = """<!DOCTYPE html>
<html>
<head>
    {refresh_tag}
    <meta charset="utf-8">
    <title>DVC Plot</title>
    <!-- Written by `pag dvc-yaml` (pag.pipeline.dvc_offline): Vega, Vega-Lite and Vega-Embed
         inlined from Snakemake's assets, so this page loads nothing from the internet. -->
%s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def assets_dir() -> Path:
    spec = importlib.util.find_spec("snakemake")
    if spec is None or not spec.submodule_search_locations:
        raise PagError("snakemake is not installed: its Vega assets make the offline plots page")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "data"


def render() -> str:
    """The template's text."""
    folder = assets_dir()
    scripts = []
    for name in LIBRARIES:
        path = folder / name
        if not path.is_file():
            raise PagError(f"{path}: missing from the installed snakemake (needed offline)")
        code = path.read_text(encoding="utf-8")
        if "</script" in code or "{plot_divs}" in code or "{scripts}" in code:
            raise PagError(f"{path}: cannot be inlined into an HTML template")
        licence = path.parent / "LICENSE"
        notice = licence.read_text(encoding="utf-8") if licence.is_file() else ""
        notice = notice.replace("--", "- -")  # an HTML comment may not hold '--'
        scripts.append(f"    <!-- {name}\n{notice}-->\n    <script>\n{code}\n    </script>")
    return PAGE % "\n".join(scripts)


def write(path: Path) -> Path:
    from pag.fileio import atomic_write

    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path, "w") as handle:
        handle.write(render())
    return path
