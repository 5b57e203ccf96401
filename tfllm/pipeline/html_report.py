"""report.md → a self-contained report.html (images inlined), to mail or attach as one file.

Python-Markdown (already a TensorBoard dependency) renders the tables and
code blocks. Reports quote text read from a workdir (sample completions,
class names, paths), so the page treats all of it as text: raw HTML in the
markdown is escaped, links keep only http(s)/mailto/relative targets, and an
image is inlined as a base64 `data:` URI only when it is a PNG file inside the
report's own directory, named by a relative path without `..`. Any other image
becomes its alt text, so the HTML neither needs nor reaches anything beside it.
"""

from __future__ import annotations

import base64
import html
import os
import re
import xml.etree.ElementTree as etree

import markdown
from markdown.treeprocessors import Treeprocessor

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

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_SAFE_SCHEMES = frozenset({"http", "https", "mailto"})
# Browsers ignore ASCII whitespace and control characters inside a URL scheme.
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):")
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\x7f]+")


def code_block(text: str) -> list[str]:
    """Markdown lines quoting `text` verbatim: the fence is longer than any run of
    backticks inside it, so quoted text cannot close the block and become markup."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return [fence, text, fence]


def _own_png(src: str, directory: str) -> bytes | None:
    """The bytes of `src` if it names a PNG inside `directory` (relative, no `..`,
    no link out of it); None for anything else."""
    parts = re.split(r"[/\\]", src)
    if (
        not src
        or os.path.isabs(src)
        or src.startswith(("/", "\\"))
        or ":" in src
        or ".." in parts
        or not src.lower().endswith(".png")
    ):
        return None
    root = os.path.realpath(directory)
    path = os.path.realpath(os.path.join(root, *parts))
    if os.path.commonpath([root, path]) != root or path == root or not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        data = f.read()
    return data if data.startswith(_PNG_SIGNATURE) else None


def _safe_href(href: str) -> bool:
    match = _SCHEME.match(_IGNORED_IN_URL.sub("", href).lower())
    return match is None or match.group(1) in _SAFE_SCHEMES


class _SafeImagesAndLinks(Treeprocessor):
    """Inlines the report's own PNGs; other images become text, unsafe links plain text."""

    def __init__(self, md: markdown.Markdown, directory: str):
        super().__init__(md)
        self.directory = directory

    def run(self, root: etree.Element) -> None:
        for element in root.iter():
            if element.tag == "a" and not _safe_href(element.get("href", "")):
                element.attrib.pop("href", None)
            elif element.tag == "img":
                data = _own_png(element.get("src", ""), self.directory)
                if data is not None:
                    element.set("src", "data:image/png;base64," + base64.b64encode(data).decode())
                else:  # not ours to embed, nothing to fetch: keep what it says
                    alt = element.get("alt", "")
                    element.tag, element.text = "span", f"[image not embedded: {alt}]"
                    element.attrib.clear()


def render_markdown(text: str, directory: str) -> str:
    """The HTML body of `text`, with images resolved against `directory`."""
    md = markdown.Markdown(extensions=["tables", "fenced_code"], output_format="html")
    md.preprocessors.deregister("html_block")  # raw HTML is text, not markup
    md.inlinePatterns.deregister("html")
    # After "unescape" (priority 0): src and href hold their final characters.
    md.treeprocessors.register(_SafeImagesAndLinks(md, directory), "tfllm_safe", -10)
    return md.convert(text)


def write_html_report(markdown_path: str, html_path: str | None = None) -> str:
    """Renders `markdown_path` to `html_path` (default: same name, .html); returns its path."""
    html_path = html_path or os.path.splitext(markdown_path)[0] + ".html"
    with open(markdown_path, encoding="utf-8") as f:
        text = f.read()
    body = render_markdown(text, os.path.dirname(os.path.abspath(markdown_path)))
    title_match = re.search(r"^# (.+)$", text, re.M)
    title = html.escape(title_match.group(1) if title_match else "tfllm report")
    page = (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{title}</title>\n<style>{_STYLE}</style>\n</head>\n<body>\n{body}\n"
        "</body>\n</html>\n"
    )
    atomic_write_text(html_path, page)
    return html_path
