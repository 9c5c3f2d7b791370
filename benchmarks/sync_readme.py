"""Regenerate the README's method and metric lists from the registries: python benchmarks/sync_readme.py"""

from __future__ import annotations

import re
from pathlib import Path

from unlearnkit.cli import markdown_list

README = Path(__file__).resolve().parents[1] / "README.md"


def synced(text: str) -> str:
    for kind in ("method", "metric"):
        block = f"<!-- {kind}s:start -->\n{markdown_list(kind)}<!-- {kind}s:end -->"
        text = re.sub(rf"<!-- {kind}s:start -->.*?<!-- {kind}s:end -->", lambda _: block, text, flags=re.S)
    return text


if __name__ == "__main__":
    README.write_text(synced(README.read_text(encoding="utf-8")), encoding="utf-8")
    print(f"updated {README}")
