"""MkDocs hook: renders a script written in `# %%` cells as a page, its comment cells as prose.

A page line `<!-- script: docs/tutorial.py -->` is replaced by the script: each `# %% [markdown]` cell
becomes Markdown (its `# ` comment prefixes removed) and each `# %%` code cell a Python code block;
what comes before the first cell (the module docstring) is the file's header and is not shown. The
script stays the single source: it runs as it is (and in the tests), and the page reads like a
notebook without a notebook format or an executing plugin.
"""

import pathlib
import re

_MARKER = re.compile(r"^<!-- script: (?P<path>\S+) -->$", re.MULTILINE)


def render_script(source: str) -> str:
    """The Markdown of a `# %%`-cell script (see the module docstring)."""
    _header, *cells = re.split(r"^# %%", source, flags=re.MULTILINE)
    blocks = []
    for cell in cells:
        header, _, body = cell.partition("\n")
        if header.strip() == "[markdown]":
            blocks.append("\n".join(re.sub(r"^# ?", "", line) for line in body.splitlines()).strip())
        else:  # a code cell; a title after `# %%` is a comment for editors, not shown
            blocks.append(_code(body))
    return "\n\n".join(block for block in blocks if block) + "\n"


def _code(text: str) -> str:
    """A Python code block of ``text``, or "" when it holds nothing but blank lines."""
    text = text.strip("\n")
    return f"```python\n{text}\n```" if text.strip() else ""


def on_page_markdown(markdown, page, config, files):
    """Replaces each script marker by the rendered script (paths relative to mkdocs.yml's folder)."""
    root = pathlib.Path(config.config_file_path).parent
    return _MARKER.sub(lambda match: render_script((root / match["path"]).read_text()), markdown)
