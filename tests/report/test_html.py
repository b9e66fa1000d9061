"""HTML pages are self-contained and render in a real headless browser (Debian's chromium)."""

import os
import shutil
import subprocess

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

from cosynth.io.files import atomic_write_json as write_json
from cosynth.report.html import HtmlReport, combine


def _page(tmp_path, name="a", title="Audit A"):
    page = HtmlReport(title)
    page.heading("Numbers").table(pd.DataFrame({"descriptor": ["density"], "AUC": [0.987654]}),
                                  row_class=["flag-bias"])
    fig, ax = plt.subplots()
    ax.plot(np.arange(5), np.arange(5) ** 2)
    page.figure(fig, "a parabola")
    page.paragraph("<script>alert(1)</script> is escaped")
    return page.write(tmp_path / f"{name}.html")


def _chromium():
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is required on CI (.ci/run installs Debian's chromium)", pytrace=False)
        pytest.skip("chromium not installed (apt-get install chromium)")
    return exe


def render_dom(path, tmp_path) -> str:
    """The DOM after load, as headless chromium serialises it."""
    cmd = [_chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync",
           f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom",
           path.resolve().as_uri()]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


def test_page_is_self_contained_and_escaped(tmp_path):
    text = _page(tmp_path).read_text()
    assert "data:image/png;base64," in text
    assert "http://" not in text and "https://" not in text and "<link" not in text
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert "0.988" in text and 'class="flag-bias"' in text


def test_page_renders_in_headless_chromium(tmp_path):
    dom = render_dom(_page(tmp_path), tmp_path)
    assert 'data-figures="1"' in dom and 'data-figures-ok="yes"' in dom
    assert "a parabola" in dom


def test_combined_page_renders_all_parts(tmp_path):
    a, b = _page(tmp_path, "a", "Audit A"), _page(tmp_path, "b", "Stress B")
    out = combine([a, b], tmp_path / "all.html", title="Everything")
    text = out.read_text()
    assert text.count("<section") == 2 and "Audit A" in text and "Stress B" in text
    dom = render_dom(out, tmp_path)
    assert 'data-figures="2"' in dom and 'data-figures-ok="yes"' in dom
    with pytest.raises(ValueError, match="not a cosynth report page"):
        (tmp_path / "x.html").write_text("<html></html>")
        combine([tmp_path / "x.html"], tmp_path / "y.html")


def test_json_has_no_nan(tmp_path):
    path = write_json(tmp_path / "r.json", {"a": float("nan"), "b": [np.float64(1.5), np.int64(2)], "c": np.inf})
    assert path.read_text().split() == '{ "a": null, "b": [ 1.5, 2 ], "c": null }'.split()
