"""report.md → a self-contained report.html (images inlined), to mail or attach as one file.

Python-Markdown (already a TensorBoard dependency) renders the tables and
code blocks; every `<img src="x.png">` that points at a file beside the
report becomes a base64 `data:` URI, so the HTML needs nothing next to it.
"""

from __future__ import annotations

import base64
import html
import os
import re

import markdown

from tfllm.utils.io import atomic_write_text

_STYLE = """
body { font-family: -apple-system, "Segoe UI", Roboto, sans-serif; max-width: 60rem;
       margin: 2rem auto; padding: 0 1rem; color: #1f2328; line-height: 1.5; }
table { border-collapse: collapse; margin: 1rem 0; }
th, td { border: 1px solid #d0d7de; padding: 0.3rem 0.6rem; text-align: left; }
th { background: #f6f8fa; }
code, pre { background: #f6f8fa; font-size: 0.9em; }
pre { padding: 0.8rem; overflow-x: auto; }
img { max-width: 100%; }
"""

_IMG_SRC = re.compile(r'(<img\b[^>]*\bsrc=")([^"]+)(")')


def _inline_images(body: str, directory: str) -> str:
    def replace(match: re.Match[str]) -> str:
        src = html.unescape(match.group(2))
        path = os.path.join(directory, src)
        if "://" in src or src.startswith("data:") or not os.path.isfile(path):
            return match.group(0)
        with open(path, "rb") as f:
            data = base64.b64encode(f.read()).decode("ascii")
        mime = "image/png" if src.lower().endswith(".png") else "application/octet-stream"
        return f"{match.group(1)}data:{mime};base64,{data}{match.group(3)}"

    return _IMG_SRC.sub(replace, body)


def write_html_report(markdown_path: str, html_path: str | None = None) -> str:
    """Renders `markdown_path` to `html_path` (default: same name, .html); returns its path."""
    html_path = html_path or os.path.splitext(markdown_path)[0] + ".html"
    with open(markdown_path, encoding="utf-8") as f:
        text = f.read()
    body = markdown.markdown(text, extensions=["tables", "fenced_code"], output_format="html")
    body = _inline_images(body, os.path.dirname(os.path.abspath(markdown_path)))
    title_match = re.search(r"^# (.+)$", text, re.M)
    title = html.escape(title_match.group(1) if title_match else "tfllm report")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )
    atomic_write_text(html_path, page)
    return html_path
