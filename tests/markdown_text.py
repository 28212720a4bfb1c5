"""What a reader sees of Markdown written with ``segdemo_app.common.literal_markdown``."""

from __future__ import annotations

import re


def shown(markdown: str) -> str:
    """``markdown`` without its backslash escapes and invisible word joiners."""
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", markdown).replace("\u2060", "")
