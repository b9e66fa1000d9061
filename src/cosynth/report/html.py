"""Self-contained HTML pages: figures inlined as base64 PNG, no external asset or script.

Each command (audit, evaluate, stress …) builds an :class:`HtmlReport`, writes it next to its
JSON, and `cosynth report` stitches several pages into one by their marked body sections.
A small inline script records, once the page has loaded, whether every figure decoded; the
browser test reads that flag from the rendered DOM.
"""

from __future__ import annotations

import base64
import html
import io
import json
import re
from pathlib import Path

import pandas as pd

from cosynth.io.files import atomic_write_text

BODY_START, BODY_END = "<!--cosynth:body-->", "<!--/cosynth:body-->"
STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{border-bottom:2px solid #446;padding-bottom:.2em} h2{margin-top:1.6em;color:#334}
table{border-collapse:collapse;margin:.8em 0;font-size:.9em} th,td{border:1px solid #ccc;padding:.25em .6em;text-align:right}
th{background:#eef} td:first-child,th:first-child{text-align:left}
figure{margin:1em 0} figure img{max-width:100%} figcaption{font-size:.85em;color:#555}
.flag-bias{background:#f8d0d0} .flag-warn{background:#fbeec8} .flag-ok{background:#d8f0d8}
pre{background:#f6f6f6;padding:.6em;overflow:auto;font-size:.8em} .note{color:#555;font-size:.9em}
"""
CHECK_SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.every(function (im) { return im.complete && im.naturalWidth > 0; });
  document.body.setAttribute('data-figures', imgs.length);
  document.body.setAttribute('data-figures-ok', ok ? 'yes' : 'no');
});
"""


def _fmt(v) -> str:
    if isinstance(v, float):
        if v != v:
            return "–"
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e5):
            return f"{v:.2e}"
        return f"{v:.3f}"
    return "–" if v is None else str(v)


class HtmlReport:
    """An ordered list of HTML fragments with helpers for the usual blocks."""

    def __init__(self, title: str):
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> "HtmlReport":
        anchor = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
        self.parts.append(f'<h{level} id="{anchor}">{html.escape(text)}</h{level}>')
        return self

    def paragraph(self, text: str, css: str | None = None) -> "HtmlReport":
        cls = f' class="{css}"' if css else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")
        return self

    def table(self, df: pd.DataFrame, row_class: list[str] | None = None, index: bool = False) -> "HtmlReport":
        df = df.reset_index() if index else df
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
        rows = []
        for i, row in enumerate(df.itertuples(index=False)):
            cls = f' class="{row_class[i]}"' if row_class and row_class[i] else ""
            cells = "".join(f"<td>{html.escape(_fmt(v))}</td>" for v in row)
            rows.append(f"<tr{cls}>{cells}</tr>")
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>")
        return self

    def figure(self, fig_or_png, caption: str = "") -> "HtmlReport":
        """Inline a matplotlib figure (closed afterwards) or a PNG file."""
        if isinstance(fig_or_png, (str, Path)):
            data = Path(fig_or_png).read_bytes()
        else:
            import matplotlib.pyplot as plt

            buf = io.BytesIO()
            fig_or_png.savefig(buf, format="png", dpi=110, bbox_inches="tight")
            plt.close(fig_or_png)
            data = buf.getvalue()
        b64 = base64.b64encode(data).decode("ascii")
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{b64}">{cap}</figure>')
        return self

    def json_block(self, data, summary: str = "All numbers (JSON)") -> "HtmlReport":
        text = json.dumps(data, indent=1, default=str)
        self.parts.append(f"<details><summary>{html.escape(summary)}</summary><pre>{html.escape(text)}</pre></details>")
        return self

    def raw(self, fragment: str) -> "HtmlReport":
        self.parts.append(fragment)
        return self

    def body(self) -> str:
        return "\n".join(self.parts)

    def render(self) -> str:
        return page(self.title, f"<h1>{html.escape(self.title)}</h1>\n{BODY_START}\n{self.body()}\n{BODY_END}")

    def write(self, path) -> Path:
        return atomic_write_text(path, self.render())


def page(title: str, content: str) -> str:
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f"<style>{STYLE}</style><script>{CHECK_SCRIPT}</script></head>\n<body>\n{content}\n</body></html>\n")


def combine(pages: list[Path], out: Path, title: str = "cosynth report") -> Path:
    """One page from several command pages: their bodies in order, with a contents list.

    Each section is headed by its page's title.

    Args:
        pages: cosynth report pages (HTML files with body markers).
        out: the combined page's path.
        title: the combined page's title.

    Returns:
        The path written.

    Raises:
        ValueError: a page has no body markers.
    """
    sections, toc = [], []
    for i, p in enumerate(pages):
        text = Path(p).read_text(encoding="utf-8")
        start, end = text.find(BODY_START), text.find(BODY_END)
        if start < 0 or end < 0:
            raise ValueError(f"{p}: not a cosynth report page (no body markers)")
        name = re.search(r"<title>(.*?)</title>", text, re.S)
        label = html.unescape(name.group(1)) if name else Path(p).stem
        toc.append(f'<li><a href="#part-{i}">{html.escape(label)}</a> <span class="note">({html.escape(str(p))})</span></li>')
        sections.append(f'<section id="part-{i}"><h1>{html.escape(label)}</h1>\n{text[start + len(BODY_START):end]}</section>')
    content = (f"<h1>{html.escape(title)}</h1>\n{BODY_START}\n<ul>{''.join(toc)}</ul>\n" + "\n".join(sections)
               + f"\n{BODY_END}")
    return atomic_write_text(out, page(title, content))
