"""report.html treats what it quotes from a workdir as text (issue 24, item 2).

A crafted workdir (its samples.json, a markdown image or link in quoted text)
must neither put live HTML into the page nor get a file from outside the run
directory base64-embedded into it; the report's own PNGs are still inlined.
"""

from __future__ import annotations

import base64
import json
import os
import re
from types import SimpleNamespace

import pytest

from tfllm.pipeline.html_report import code_block, write_html_report
from tfllm.recipes import pipeline_journey

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16  # the signature is all the inliner checks


def _secrets(tmp_path):
    """A text file and a PNG outside the run directory, and their base64 forms."""
    text = tmp_path / "secret.txt"
    text.write_text("TOP-SECRET-HOSTNAME\n")
    png = tmp_path / "outside.png"
    png.write_bytes(PNG + b"OUTSIDE")
    encoded = [base64.b64encode(p.read_bytes()).decode() for p in (text, png)]
    return text, png, encoded


def _assert_inert(page: str, encoded: list[str]) -> None:
    for data in encoded:
        assert data not in page, "a file from outside the run directory was embedded"
    assert "application/octet-stream" not in page
    assert not re.search(r"<img\b[^>]*\bsrc=\"(?!data:image/png;base64,)", page), page
    assert not re.search(r"<script", page, re.I), "a live <script> in report.html"
    assert not re.search(r'href="[^"]*script:', page, re.I), "a live javascript: link"


def test_journey_report_quotes_crafted_samples_as_text(tmp_path):
    from tfllm.pipeline.journey import part_configs
    from tfllm.pipeline.journey_report import write_journey_report

    secret, outside_png, encoded = _secrets(tmp_path)
    workdir = tmp_path / "run"
    (workdir / "lm").mkdir(parents=True)
    completion = (
        " the end.\n```\n\n<script>alert(document.cookie)</script>\n"
        f'<img src="{secret}">\n<img src="{outside_png}">\n'
        f"![leak]({secret}) ![leak2](../outside.png) [click](javascript:alert(1))\n```\n"
    )
    samples = [
        {"settings": "top_p=0.9", "prompt": "Once", "completion": completion},
        {"settings": "temperature=0.8", "prompt": "<b>", "completion": "````\n<script>x</script>"},
    ]
    (workdir / "lm" / "samples.json").write_text(json.dumps({"samples": samples}))

    journey = pipeline_journey("quick")
    configs = part_configs(journey, str(workdir))
    run = SimpleNamespace(workdir=str(workdir), results=[])
    path = str(workdir / "report.md")
    write_journey_report(run, journey, configs, path)

    page = (workdir / "report.html").read_text()
    _assert_inert(page, encoded)
    # The samples are still there, verbatim, as code.
    assert "&lt;script&gt;alert(document.cookie)&lt;/script&gt;" in page
    assert page.count("<pre><code>") >= 2
    report = (workdir / "report.md").read_text()
    assert "````\n" + samples[0]["prompt"] + completion + "\n````" in report


def test_html_report_inlines_only_its_own_pngs(tmp_path):
    secret, outside_png, encoded = _secrets(tmp_path)
    run = tmp_path / "run"
    (run / "sub").mkdir(parents=True)
    (run / "curve.png").write_bytes(PNG + b"OWN")
    (run / "sub" / "matrix.png").write_bytes(PNG + b"SUB")
    (run / "fake.png").write_text("not a png at all")
    os.symlink(outside_png, run / "link.png")
    markdown = "\n".join(
        [
            "# report <script>alert(1)</script>",
            "",
            "| class | n |",
            "|---|---|",
            "| <script>alert(2)</script> | 1 |",
            "",
            "![curve](curve.png)",
            "",
            "![matrix](sub/matrix.png)",
            "",
            f"![abs]({outside_png}) ![up](../outside.png) ![link](link.png) ![fake](fake.png)",
            f'<img src="{secret}"> <img src="{outside_png}">',
            "",
            "[x](javascript:alert(3)) [y](JaVa\tScript:alert(4)) [ok](https://example.com)",
        ]
    )
    (run / "report.md").write_text(markdown)
    page = open(write_html_report(str(run / "report.md"))).read()
    _assert_inert(page, encoded)
    own = [base64.b64encode(PNG + tail).decode() for tail in (b"OWN", b"SUB")]
    assert all(f'src="data:image/png;base64,{data}"' in page for data in own)
    assert page.count("data:image/png;base64,") == 2
    assert "&lt;script&gt;alert(2)&lt;/script&gt;" in page
    assert "<title>report &lt;script&gt;" in page
    assert 'href="https://example.com"' in page
    assert "[image not embedded: abs]" in page


@pytest.mark.parametrize(
    "text, fence",
    [("plain", "```"), ("a ``` b", "````"), ("```` and `", "`````")],
)
def test_code_block_fence_outlasts_the_text(text, fence):
    assert code_block(text) == [fence, text, fence]
