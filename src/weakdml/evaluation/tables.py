"""The table of a multi-seed comparison (as in the MbDML paper): per method, mean ± std of the test accuracy over
seeds, the best mean in bold and the methods statistically tied with it marked; as Markdown, CSV, LaTeX and JSON."""

from __future__ import annotations

import csv
import io
import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import ttest_ind

ALPHA = 0.05
FOOTNOTE = ("Test accuracy of the best-on-validation model, mean ± sample standard deviation (ddof=1) over seeds, "
            "in %. Bold: best mean. †: not significantly different from the best (Welch's t-test, p ≥ 0.05; tested "
            "only when both methods have at least 2 seeds). Time: training epochs per run, mean over seeds.")


@dataclass(frozen=True)
class SeedResult:
    """One finished run: accuracies in %, time in seconds."""

    seed: int
    accuracy: float
    knn_accuracy: float
    seconds: float


@dataclass
class MethodRow:
    """A method's finished runs, the seeds still missing, and its standing against the best method."""

    method: str
    results: list[SeedResult]
    missing: list[int] = field(default_factory=list)
    best: bool = False
    tied: bool = False
    p_value: float | None = None

    @property
    def n(self) -> int:
        return len(self.results)

    def values(self, name: str) -> np.ndarray:
        return np.array([getattr(r, name) for r in self.results], dtype=float)

    def stats(self, name: str = "accuracy") -> tuple[float, float]:
        """(mean, sample std) of a field over seeds; NaN where undefined (no seeds; std of one seed)."""
        return mean_std(self.values(name))


def mean_std(values: np.ndarray) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1); NaN where undefined."""
    mean = float(np.mean(values)) if len(values) else math.nan
    std = float(np.std(values, ddof=1)) if len(values) >= 2 else math.nan
    return mean, std


def rank(rows: list[MethodRow], alpha: float = ALPHA) -> list[MethodRow]:
    """Mark the best mean test accuracy (every method reaching it) and the methods tied with the best by Welch's
    t-test (p ≥ alpha; only when both have ≥ 2 seeds). Changes the rows in place and returns them."""
    scored = [row for row in rows if row.n]
    if not scored:
        return rows
    top = max(row.stats()[0] for row in scored)
    best = next(row for row in scored if row.stats()[0] == top)
    for row in rows:
        row.best = bool(row.n) and row.stats()[0] == top
        row.tied, row.p_value = False, None
        if row.best or row.n < 2 or best.n < 2:
            continue
        with warnings.catch_warnings():  # nearly identical seeds: scipy warns of precision loss, p may be NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            p = float(ttest_ind(row.values("accuracy"), best.values("accuracy"), equal_var=False).pvalue)
        row.p_value = None if math.isnan(p) else p
        row.tied = row.p_value is not None and row.p_value >= alpha
    return rows


def _number(mean: float, std: float, pm: str = " ± ") -> str:
    if math.isnan(mean):
        return "—"
    return f"{mean:.2f}" if math.isnan(std) else f"{mean:.2f}{pm}{std:.2f}"


def duration(seconds: float) -> str:
    """Seconds as a short human duration (s, min or h)."""
    if math.isnan(seconds):
        return "—"
    if seconds < 120:
        return f"{seconds:.1f} s"
    return f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def _missing_note(rows: list[MethodRow]) -> str:
    parts = [f"{row.method} (seeds {', '.join(map(str, row.missing))})" for row in rows if row.missing]
    return f"Not finished yet: {'; '.join(parts)}." if parts else ""


def metric_label(metric: str) -> str:
    """'test_accuracy' -> 'Test accuracy', 'test_recall@1' -> 'Test Recall@1': the primary metric, for people."""
    words = metric.removeprefix("test_").replace("_", " ")
    return "Test " + (words.replace("recall", "Recall") if words.startswith("recall") else words)


def header(metric: str) -> tuple[str, ...]:
    return ("Method", f"{metric_label(metric)} (%)", "Seeds", "kNN accuracy (%)", "Time per run")


def footnote(metric: str) -> str:
    return FOOTNOTE.replace("Test accuracy of the best-on-validation model", f"{metric_label(metric)} of the model "
                            "chosen on validation")


def to_markdown(rows: list[MethodRow], metric: str = "test_accuracy") -> str:
    lines = ["| " + " | ".join(header(metric)) + " |", "|:--|--:|--:|--:|--:|"]
    for row in rows:
        accuracy = _number(*row.stats())
        accuracy = f"**{accuracy}**" if row.best else accuracy + (" †" if row.tied else "")
        lines.append(f"| {row.method} | {accuracy} | {row.n} | {_number(*row.stats('knn_accuracy'))} | "
                     f"{duration(row.stats('seconds')[0])} |")
    notes = [footnote(metric), _missing_note(rows)]
    return "\n".join(lines) + "\n\n" + "\n\n".join(n for n in notes if n) + "\n"


def _latex_escape(text: str) -> str:
    return "".join("\\" + c if c in "&%$#_{}" else c for c in text)


def to_latex(rows: list[MethodRow], metric: str = "test_accuracy") -> str:
    """A booktabs tabular; the footnote goes in comments (it belongs in the caption)."""
    lines = [f"% {note}" for note in (footnote(metric), _missing_note(rows)) if note]
    lines += [r"\begin{tabular}{lrrrr}", r"\toprule",
              " & ".join(_latex_escape(h) for h in header(metric)) + r" \\", r"\midrule"]
    for row in rows:
        accuracy = _number(*row.stats(), pm=r" $\pm$ ")
        accuracy = rf"\textbf{{{accuracy}}}" if row.best else accuracy + (r"$^\dagger$" if row.tied else "")
        cells = (_latex_escape(row.method), accuracy, str(row.n), _number(*row.stats("knn_accuracy"), pm=r" $\pm$ "),
                 duration(row.stats("seconds")[0]))
        lines.append(" & ".join(cells).replace("—", "--") + r" \\")
    return "\n".join(lines + [r"\bottomrule", r"\end{tabular}"]) + "\n"


def _finite(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(value, 6)


def to_summary(rows: list[MethodRow], metric: str = "test_accuracy") -> dict[str, Any]:
    """Per method: n, mean, std and per-seed values (accuracies in %), best/tied flags, missing seeds."""
    methods: dict[str, Any] = {}
    for row in rows:
        entry: dict[str, Any] = {"n": row.n}
        for name, key in (("accuracy", metric), ("knn_accuracy", "knn_accuracy"), ("seconds", "seconds")):
            mean, std = row.stats(name)
            entry[key] = {"mean": _finite(mean), "std": _finite(std),
                          "per_seed": {str(r.seed): _finite(getattr(r, name)) for r in row.results}}
        entry |= {"best": row.best, "tied_with_best": row.tied, "p_value_vs_best": _finite(row.p_value),
                  "missing_seeds": row.missing}
        methods[row.method] = entry
    return {"unit": "%", "metric": metric, "rule": footnote(metric), "methods": methods}


def to_csv(rows: list[MethodRow], metric: str = "test_accuracy") -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["method", "n_seeds", f"{metric}_mean", f"{metric}_std", "knn_accuracy_mean",
                     "knn_accuracy_std", "seconds_mean", "best", "tied_with_best", "p_value_vs_best", "missing_seeds"])
    for row in rows:
        numbers = [*row.stats(), *row.stats("knn_accuracy"), row.stats("seconds")[0]]
        writer.writerow([row.method, row.n, *("" if math.isnan(x) else f"{x:.4f}" for x in numbers), int(row.best),
                         int(row.tied), "" if row.p_value is None else f"{row.p_value:.4g}",
                         " ".join(map(str, row.missing))])
    return buffer.getvalue()


def write_tables(rows: list[MethodRow], out: Path, metric: str = "test_accuracy") -> str:
    """Rank the rows by ``metric`` (the task's primary metric) and write table.md, table.csv, table.tex and
    summary.json into ``out``; return the Markdown."""
    rank(rows)
    out.mkdir(parents=True, exist_ok=True)
    markdown = to_markdown(rows, metric)
    (out / "table.md").write_text(markdown)
    (out / "table.csv").write_text(to_csv(rows, metric))
    (out / "table.tex").write_text(to_latex(rows, metric))
    (out / "summary.json").write_text(json.dumps(to_summary(rows, metric), indent=2, ensure_ascii=False) + "\n")
    return markdown
