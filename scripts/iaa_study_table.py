"""The table of scripts/iaa_study.sh: per variant and loss, Recall@1/2/4/8 and MAP@R on the unseen classes, mean ±
standard deviation over the finished seeds (in %), as Markdown.

    .venv/bin/python scripts/iaa_study_table.py OUT
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

METRICS = ("test_recall@1", "test_recall@2", "test_recall@4", "test_recall@8", "test_map@r")


def cell(values: list[float]) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{100 * statistics.mean(values):.1f} ± {100 * spread:.1f}"


def main(out: Path) -> str:
    lines = ["| variant | loss | seeds | R@1 | R@2 | R@4 | R@8 | MAP@R | train s |",
             "|---|---|---|---|---|---|---|---|---|"]
    for variant in sorted(p for p in out.iterdir() if (p / "runs").is_dir()):
        by_method: dict[str, list[dict]] = {}
        for final in sorted((variant / "runs").glob("*-s*/final_metrics.json")):
            by_method.setdefault(final.parent.name.rsplit("-s", 1)[0], []).append(json.loads(final.read_text()))
        for method, runs in by_method.items():
            cells = [cell([r[m] for r in runs]) for m in METRICS]
            seconds = statistics.mean(r["train_seconds"] for r in runs)
            lines.append(f"| {variant.name} | {method} | {len(runs)} | {' | '.join(cells)} | {seconds:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(main(Path(sys.argv[1])))
