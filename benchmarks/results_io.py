"""Where a benchmark's numbers go: ``<out>/<name>.json`` (everything measured) and ``<out>/<name>.md`` (the table)."""

from __future__ import annotations

import json
from pathlib import Path


def save(out: str | Path, name: str, result: dict, text: str) -> None:
    """Write the JSON and the Markdown of one benchmark and print the Markdown."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    (out / f"{name}.md").write_text(text)
    print(text)
