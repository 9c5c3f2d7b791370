"""Reports of a run, rebuilt from its result files only (DESIGN §6, §10.7).

``write_reports(run_dir)`` reads ``run_dir/results.jsonl`` and ``run_dir/config.resolved.yaml`` and writes
``report.md`` (a markdown table) and ``report.html`` (one offline page with tables and SVG charts) next to them.

Numbers shown (mean ± sample std over the successful seeds, 2 decimals):

- UA (%): 100 − forget-set accuracy; closer to the oracle is better.
- RA (%), TA (%): retain / test accuracy; higher is better, ideally the oracle's.
- MIA-Eff. (%): share of the forget set an MIA calls non-members; closer to the oracle is better.
- Avg. Gap (percentage points): mean |Δ| to the oracle over UA, RA, TA, MIA-Eff., of the seed means; lower is better.
- RTE (s): seconds spent unlearning (the oracle's: retraining); lower is better.
- Forgotten-class TA (%, class scenarios): test accuracy on the forgotten classes; closer to the oracle is better.
"""

from __future__ import annotations

import os
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from unlearnkit.errors import DataError
from unlearnkit.persist import atomic_write
from unlearnkit.report._common import cell, column_sigs, columns_for, label, seeds_cell, verdict_cell
from unlearnkit.report.html import to_html
from unlearnkit.report.markdown import to_markdown
from unlearnkit.report.neurips_section import compute_neurips, html_section, load_neurips, markdown_section
from unlearnkit.report.tune_section import html_section as tune_html
from unlearnkit.report.tune_section import load_tune
from unlearnkit.report.tune_section import markdown_section as tune_markdown
from unlearnkit.report.summary import (
    CONFIG_FILE,
    RESULTS_FILE,
    ReportWarning,
    SummaryRow,
    avg_gap_of_means,
    latest_rows,
    load_rows,
    read_results,
    summarize,
    superseded_rows,
)

if TYPE_CHECKING:  # rich is imported lazily
    from rich.table import Table

MARKDOWN_FILE = "report.md"
HTML_FILE = "report.html"


def _read_config(run_dir: Path) -> tuple[str | None, dict[str, Any]]:
    path = run_dir / CONFIG_FILE
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return None, {}
    except OSError as err:
        warnings.warn(f"cannot read {path}: {err}; the report will not show the config", ReportWarning, stacklevel=3)
        return None, {}
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        warnings.warn(f"{path} is not valid YAML ({err}); the report shows it as text only", ReportWarning,
                      stacklevel=3)
        data = None
    return text, data if isinstance(data, dict) else {}


def _name_of(spec: Any) -> str | None:
    if isinstance(spec, str):
        return spec
    if isinstance(spec, Mapping):
        if spec.get("source") == "muse":  # MUSE has no TOFU forget split: name the corpus (root folder or hub id)
            root = spec.get("root")
            return f"muse ({Path(str(root)).name if root else spec.get('hub_id') or 'muse-bench/MUSE-News'})"
        for key in ("name", "source", "arch", "kind"):  # classifier specs have a name; track sections vary
            if spec.get(key):
                extra = spec.get("forget_split") or spec.get("path")
                return f"{spec[key]} ({extra})" if extra and key != "name" else str(spec[key])
    return None


def build_meta(
    run_dir: str | os.PathLike[str],
    rows: Sequence[Mapping[str, Any]],
    *,
    config_text: str | None = None,
    config: Mapping[str, Any] | None = None,
    skipped_lines: int = 0,
) -> dict[str, Any]:
    """The header facts of a report, from the rows first and the resolved config second.

    Keys: ``run`` (rows' ``run``, else the config's ``name``, else the directory name), ``config_sha256`` (the
    most frequent hash in the rows, ties → the latest), ``config_hashes`` (all distinct, file order), ``scenario``
    (the config's scenario updated with the first row's, which adds ``n_forget``), ``data``, ``model``, ``versions``
    (latest row), ``config_text``, ``skipped_lines``, ``superseded`` (rows replaced by a retry), ``preflight``
    (the distinct warnings of θ_o's pre-flight checks: no memorisation of D_f, nothing measurable to unlearn).
    """
    config = dict(config or {})
    run = next((str(r["run"]) for r in rows if r.get("run")), None) or config.get("name") or Path(run_dir).name
    hashes = [str(r["config_sha256"]) for r in rows if r.get("config_sha256")]
    counts = Counter(hashes)
    best = max(counts.values()) if counts else 0
    config_sha = next((h for h in reversed(hashes) if counts[h] == best), None)
    scenario: dict[str, Any] = dict(config.get("scenario") or {}) if isinstance(config.get("scenario"), Mapping) else {}
    row_sc = next((r["scenario"] for r in rows if isinstance(r.get("scenario"), Mapping) and not r.get("is_oracle")),
                  None) or next((r["scenario"] for r in rows if isinstance(r.get("scenario"), Mapping)), None)
    if row_sc:
        scenario.update(row_sc)
    versions = next((r["versions"] for r in reversed(rows) if isinstance(r.get("versions"), Mapping)), None)
    track = str(config.get("track") or next((r["track"] for r in rows if r.get("track")), None) or "classifier")
    # classifier runs keep data/model at the top level; other tracks in their section (llm:, graph:, recsys:)
    section = config.get(track) if track != "classifier" and isinstance(config.get(track), Mapping) else config
    return {
        "run": run,
        "config_sha256": config_sha,
        "config_hashes": list(dict.fromkeys(hashes)),
        "scenario": scenario or None,
        "track": track,
        "data": _name_of(section.get("data")),
        "model": _name_of(section.get("model")),
        "versions": dict(versions) if versions else None,
        "config_text": config_text,
        "skipped_lines": skipped_lines,
        "superseded": sum(superseded_rows(rows)),
        "preflight": list(dict.fromkeys(str(w) for r in rows if isinstance(r.get("preflight"), list)
                                        for w in r["preflight"])),
    }


def _atomic_write(path: Path, text: str) -> None:
    atomic_write(path, text)  # readable like the other run files (0644)


def write_reports(run_dir: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Build ``report.md`` and ``report.html`` in ``run_dir`` from results.jsonl and config.resolved.yaml only.

    Each file is written atomically (temp file, fsync, ``os.replace``), so a reader never sees half a report.
    Invalid lines of results.jsonl are skipped with a :class:`ReportWarning` and counted in the header.

    Returns:
        ``(path of report.md, path of report.html)``.

    Raises:
        DataError: ``run_dir`` is not a directory, has no results.jsonl, or results.jsonl has no valid row.
    """
    d = Path(run_dir)
    if not d.is_dir():
        raise DataError(f"run directory {d} does not exist; run `unlearnkit run CONFIG` first, then pass the "
                        "directory it prints (runs/<name>-<hash8>/)")
    if not (d / RESULTS_FILE).is_file():
        raise DataError(f"{d} has no {RESULTS_FILE}; run `unlearnkit run CONFIG` first (it writes one row per "
                        "method and seed), or pass the run directory it created (runs/<name>-<hash8>/)")
    rows, skipped = read_results(d / RESULTS_FILE)
    if not rows:
        raise DataError(f"{d / RESULTS_FILE} has no valid result row ({skipped} unreadable line(s)); rerun "
                        "`unlearnkit run CONFIG` to produce results")
    config_text, config = _read_config(d)
    meta = build_meta(d, rows, config_text=config_text, config=config, skipped_lines=skipped)
    summary = summarize(rows)
    md_path, html_path = d / MARKDOWN_FILE, d / HTML_FILE
    neurips = load_neurips(d)  # present only after `unlearnkit report RUN_DIR --neurips`
    from unlearnkit.report.figures import evaluation_sections

    from unlearnkit.report.order_section import markdown_section as order_markdown

    md, page = to_markdown(summary, meta), to_html(summary, rows, meta, evaluation_sections(d, rows, summary, neurips))
    from unlearnkit.report import policies
    from unlearnkit.report.generative import generative_markdown

    md += policies.markdown_section(rows)  # inference-time policies: what they change, what they cannot, cost
    if policies.policy_table(rows):
        page = page.replace("</body>", policies.html_section(rows) + "</body>", 1)
    md += order_markdown(rows)  # '' unless rows carry the `order` dimension (LLM track, source: stages)
    from unlearnkit.report.figures import audit_markdown, continual_markdown

    md += audit_markdown(rows)  # '' unless the LLM audit probes ran: verdicts, probe scores, relearning curves
    md += continual_markdown(rows)  # '' unless a continual schedule: ACC, BWT, forgetting, forgotten, relapse, costs
    from unlearnkit.report import backdoor_section

    md += backdoor_section.markdown_section(rows)  # '' unless rows carry corrective / backdoor_detection keys
    backdoor_html = backdoor_section.html_section(rows)
    if backdoor_html:
        page = page.replace("</body>", backdoor_html + "</body>", 1)
    md += generative_markdown(d, rows)
    if neurips is not None:
        md += markdown_section(neurips)
        page = page.replace("</body>", html_section(neurips) + "</body>", 1)
    searched = load_tune(d)  # present after `unlearnkit tune` of the same config
    if searched:
        md += tune_markdown(searched)
        page = page.replace("</body>", tune_html(searched) + "</body>", 1)
    _atomic_write(md_path, md)
    _atomic_write(html_path, page)
    return md_path, html_path


def console_table(summary: Sequence[SummaryRow], title: str | None = None) -> Table:
    """A rich Table with the markdown table's columns (Method, UA, RA, TA, MIA-Eff., Avg. Gap, RTE (s), seeds).

    Cells are "mean ± std" over the successful seeds (as in report.md: at least 2 decimals and 2 significant
    digits, more where a column's means would print alike); the oracle row is bold and labelled
    "retrain (oracle)"; methods with failed seeds show the seeds column in red. Labels are printed literally
    (rich markup in a label is not interpreted).
    """
    from rich.table import Table
    from rich.text import Text

    cols = columns_for(summary)
    classifier = any(c.key == "unlearn_acc" for c in cols)
    caption = ("mean ± std over seeds; UA, MIA-Eff.: closer to oracle is better; RA, TA: higher; Avg. Gap, RTE: lower"
               if classifier else "mean ± std over seeds; the column meanings and directions are in report.md")
    table = Table(title=title, caption=caption)
    # min widths keep every number whole on an 80-column terminal: cells wrap at spaces ("mean ±" / "std")
    # instead of being cut to "100…".
    table.add_column("Method", min_width=8, overflow="fold")
    for c in cols:
        table.add_column(c.header, justify="right", min_width=6)
    table.add_column("seeds", justify="right", min_width=4)
    if any(s.verdict for s in summary):
        table.add_column("verdict", min_width=7, overflow="fold")
    sigs = column_sigs(summary, cols)
    for s in summary:
        style = "bold" if s.is_oracle else None
        seeds = Text(seeds_cell(s), style="red" if s.n_failed else "")
        extra = []
        if any(x.verdict for x in summary):
            bad = s.verdict not in ("ok", "reference", "")
            extra = [Text(verdict_cell(s), style="yellow" if bad else "")]
        table.add_row(Text(label(s)), *(cell(s, c, sigs[c.key]) for c in cols), seeds, *extra, style=style)
    return table


__all__ = [
    "compute_neurips",
    "load_neurips",
    "HTML_FILE",
    "MARKDOWN_FILE",
    "ReportWarning",
    "SummaryRow",
    "avg_gap_of_means",
    "build_meta",
    "console_table",
    "latest_rows",
    "load_rows",
    "summarize",
    "to_html",
    "to_markdown",
    "write_reports",
]
