"""Open an HTML report in real headless Chromium: a screenshot, every image's natural size, the tables as
rendered."""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

from lakeml.ml.report import _format_cell

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
PROBE_ID = "lakeml-probe"
# Runs in the page once everything loaded: what the browser made of each image.
PROBE = f"""<script>
window.addEventListener("load", () => {{
  const images = [...document.images].map(i => ({{
    alt: i.alt, complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}}));
  const pre = document.createElement("pre");
  pre.id = "{PROBE_ID}";
  pre.textContent = JSON.stringify({{images}});
  document.body.appendChild(pre);
}});
</script>"""


def chromium() -> str:
    """The Chromium executable (scripts/install puts Debian's `chromium` on a fresh machine)."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise AssertionError("no Chromium on PATH: run scripts/install (it installs Debian's chromium package)")


def _run(args: list[str], workdir: Path) -> str:
    base = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    base += [f"--user-data-dir={workdir / 'profile'}", "--virtual-time-budget=10000"]
    result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


@dataclass
class RenderedReport:
    images: list[dict]
    tables: list[dict]  # {"caption": str, "header": [..], "rows": [[..], ..]}
    screenshot: Path

    def table(self, caption_prefix: str) -> dict:
        found = [t for t in self.tables if t["caption"].startswith(caption_prefix)]
        assert found, f"no table '{caption_prefix}…' in {[t['caption'] for t in self.tables]}"
        return found[0]


def render(report: str | Path, workdir: Path) -> RenderedReport:
    """Load ``report`` in headless Chromium; its rendered DOM's tables, each image's natural size, a
    screenshot."""
    workdir.mkdir(parents=True, exist_ok=True)
    probed = workdir / "probed.html"
    probed.write_text(Path(report).read_text(encoding="utf-8").replace("</body>", PROBE + "</body>"))
    screenshot = workdir / "screenshot.png"
    _run([f"--screenshot={screenshot}", "--window-size=1280,2400", probed.as_uri()], workdir)
    dom = _run(["--dump-dom", probed.as_uri()], workdir)
    parser = _TableParser()
    parser.feed(dom)
    assert parser.probe, "the probe script did not run (no JavaScript?)"
    return RenderedReport(json.loads(parser.probe)["images"], parser.tables, screenshot)


def assert_renders_with_mlflow_headlines(
    report: str | Path, workdir: Path, metrics: Mapping[str, float], headline_tables: Mapping[str, str]
) -> RenderedReport:
    """Every image decoded with a non-zero natural size, a non-empty screenshot, and in each table of
    ``headline_tables`` (caption prefix → model name) the candidate row's figures shown exactly as the
    run's MLflow metrics ``<model>.<column>`` format; plus the promotion table's candidate figures."""
    page = render(report, workdir)
    assert page.screenshot.stat().st_size > 10_000  # a real page, not a blank PNG
    assert page.images, "the report has no images"
    for image in page.images:
        assert image["complete"] and image["width"] > 0 and image["height"] > 0, image
    for caption, model in headline_tables.items():
        table = page.table(caption)
        row = next(r for r in table["rows"] if "(candidate)" in r[0])
        checked = [
            (column, cell, metrics[f"{model}.{column}"])
            for column, cell in zip(table["header"], row, strict=True)
            if f"{model}.{column}" in metrics
        ]
        assert checked, f"no column of '{caption}' is an MLflow metric of {model}"
        for column, cell, value in checked:
            assert cell == _format_cell(value)[0], (caption, column, cell, value)
    promotion = page.table("Candidate vs current champion")
    columns = promotion["header"]
    for row in promotion["rows"]:
        cells = dict(zip(columns, row, strict=True))
        value = metrics[f"{cells['model']}.{cells['metric']}"]
        assert cells["candidate"] == _format_cell(value)[0], cells
    return page


class _TableParser(HTMLParser):
    """Tables (caption, header cells, body rows) and the probe's text, from the rendered DOM."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: list[dict] = []
        self.probe = ""
        self._text: list[str] | None = None
        self._row: list[str] | None = None
        self._in_probe = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table":
            self.tables.append({"caption": "", "header": [], "rows": []})
        elif tag == "tr":
            self._row = []
        elif tag in ("td", "th", "caption"):
            self._text = []
        elif tag == "pre" and ("id", PROBE_ID) in attrs:
            self._in_probe = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._text is not None:
            self._row.append("".join(self._text).strip())
            self._text = None
        elif tag == "caption" and self._text is not None:
            self.tables[-1]["caption"] = "".join(self._text).strip()
            self._text = None
        elif tag == "tr" and self._row is not None:
            table = self.tables[-1]
            if table["header"]:
                table["rows"].append(self._row)
            else:
                table["header"] = self._row
            self._row = None
        elif tag == "pre":
            self._in_probe = False

    def handle_data(self, data: str) -> None:
        if self._text is not None:
            self._text.append(data)
        if self._in_probe:
            self.probe += data
