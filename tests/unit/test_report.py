"""Reports rebuilt from result files (unlearnkit.report): aggregation, markdown, offline HTML, atomic writes.

The fixture run ``fixtures_report/run_basic`` is hand-written; every expected number below was computed by hand from
it (see the comments), not by the code under test. Its file order is deliberately awkward: a method comes before the
oracle, grad_ascent seed 0 first fails and is retried later, and the last line is cut off mid-object.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import warnings
from html.parser import HTMLParser
from io import StringIO
from pathlib import Path

import pytest

from unlearnkit.errors import DataError
from unlearnkit.report import (
    SummaryRow,
    avg_gap_of_means,
    build_meta,
    console_table,
    load_rows,
    summarize,
    to_html,
    to_markdown,
    write_reports,
)
from unlearnkit.report.charts import nice_domain
from unlearnkit.report.summary import ReportWarning, latest_rows

FIXTURE = Path(__file__).parent / "fixtures_report" / "run_basic"
HASH = "ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12cd34ef56ab12"
SQRT50 = math.sqrt(50.0)  # sample std of {10, 20} (and of {90, 80}, {30, 40}) = sqrt(((-5)² + 5²) / 1)
SQRT8 = math.sqrt(8.0)  # sample std of {88, 84}


def _rows() -> list[dict]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ReportWarning)
        return load_rows(FIXTURE)


@pytest.fixture(scope="module")
def summary() -> list[SummaryRow]:
    return summarize(_rows())


def _by(summary: list[SummaryRow]) -> dict[str, SummaryRow]:
    return {s.method: s for s in summary}


def _row(method: str, seed: int, status: str = "ok", oracle: bool = False, error: str | None = None, **metrics):
    return {
        "schema": "unlearnkit.result/1", "run": "t", "config_sha256": "f" * 64, "method": method,
        "method_name": method, "params": {}, "seed": seed, "is_oracle": oracle, "status": status, "error": error,
        "metrics": metrics, "scenario": {"kind": "random", "fraction": 0.1, "n_forget": 10},
    }


def _write_run(d: Path, rows: list[dict], config: str | None = "name: t\n") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    if config is not None:
        (d / "config.resolved.yaml").write_text(config, encoding="utf-8")
    return d


# ------------------------------------------------------------------------------------------------------ loading
def test_truncated_last_line_is_skipped_with_a_warning():
    with pytest.warns(ReportWarning, match=r"results\.jsonl:14: .*not valid JSON"):
        rows = load_rows(FIXTURE)
    assert len(rows) == 13  # 14 lines, the 14th is cut off mid-object
    assert [r["method"] for r in rows[:3]] == ["finetune", "retrain", "grad_ascent"]
    # the truncated line was ssd seed 2: it must not appear at all
    assert sorted(r["seed"] for r in rows if r["method"] == "ssd") == [0, 1]


def test_non_object_and_blank_lines_skipped(tmp_path):
    p = tmp_path / "results.jsonl"
    p.write_text('\n42\n{"no_method": 1}\n' + json.dumps(_row("a", 0, unlearn_acc=1.0)) + "\n\n", encoding="utf-8")
    with pytest.warns(ReportWarning) as rec:
        rows = load_rows(tmp_path)
    assert [r["method"] for r in rows] == ["a"]
    assert len(rec) == 2  # "42" and the object without 'method'; blank lines are silent


def test_last_row_wins_for_a_retried_seed():
    rows = _rows()
    latest = latest_rows(rows)
    ga = [r for r in latest if r["method"] == "grad_ascent"]
    assert [(r["seed"], r["status"]) for r in ga] == [(0, "ok"), (1, "ok")]
    assert ga[0]["metrics"]["unlearn_acc"] == 10.0  # the retry's value, not the error row's empty metrics
    assert len(latest) == 12  # 13 valid rows, one of them replaced


def test_oracle_first_then_first_appearance_order(summary):
    assert [s.method for s in summary] == ["retrain", "finetune", "grad_ascent", "ssd", "oom_method"]
    assert [s.is_oracle for s in summary] == [True, False, False, False, False]


# -------------------------------------------------------------------------------------------------- aggregation
def test_oracle_means_and_sample_std(summary):
    o = _by(summary)["retrain"]
    assert o.n_seeds == 3 and o.n_failed == 0 and o.status == "ok"
    assert o.mean["test_acc"] == pytest.approx(92.0)  # (90 + 92 + 94) / 3
    assert o.std["test_acc"] == pytest.approx(2.0)  # ddof=1: sqrt((4 + 0 + 4) / 2); ddof=0 would give 1.633
    assert o.mean["unlearn_acc"] == pytest.approx(6.0) and o.std["unlearn_acc"] == pytest.approx(1.0)
    assert o.mean["mia_efficacy"] == pytest.approx(12.0) and o.std["mia_efficacy"] == pytest.approx(2.0)
    assert o.std["retain_acc"] == 0.0 and o.mean["unlearn_seconds"] == pytest.approx(30.0)
    assert o.gap_of_means == 0.0


def test_retried_method_uses_only_latest_rows(summary):
    ga = _by(summary)["grad_ascent"]
    assert (ga.n_seeds, ga.n_failed, ga.status, ga.errors) == (2, 0, "ok", [])
    assert ga.mean["unlearn_acc"] == pytest.approx(15.0)  # (10 + 20) / 2
    assert ga.std["unlearn_acc"] == pytest.approx(SQRT50)
    assert ga.mean["test_acc"] == pytest.approx(86.0) and ga.std["test_acc"] == pytest.approx(SQRT8)


def test_partial_and_error_statuses(summary):
    by = _by(summary)
    ssd = by["ssd"]
    assert (ssd.status, ssd.n_seeds, ssd.n_failed) == ("partial", 1, 1)
    assert ssd.std["unlearn_acc"] == 0.0 and ssd.mean["unlearn_acc"] == 4.0  # one seed: std is 0.0
    assert ssd.errors == ["DivergenceError: loss became inf at step 7"]
    assert ssd.failed_seeds == [0] and ssd.seeds == [1]
    oom = by["oom_method"]
    assert (oom.status, oom.n_seeds, oom.n_failed) == ("error", 0, 2)
    assert oom.errors == ["RuntimeError: out of memory"]  # two identical messages → one
    assert oom.method_name == "finetune" and oom.mean == {}
    assert math.isnan(oom.gap_of_means)


def test_all_diverged_is_diverged():
    s = summarize([_row("a", 0, "diverged", error="x"), _row("a", 1, "diverged", error="y")])
    assert s[0].status == "diverged" and s[0].errors == ["x", "y"]


def test_gap_of_means_is_not_mean_of_per_seed_gaps(summary):
    ft = _by(summary)["finetune"]
    # means: UA 2, RA 99, TA 91, MIA 8 vs oracle 6, 100, 92, 12 → (4 + 1 + 1 + 4) / 4
    assert ft.gap_of_means == pytest.approx(2.5)
    assert ft.mean["avg_gap"] == pytest.approx(3.0)  # (2 + 3 + 4) / 3 from the rows' own per-seed values
    ga = _by(summary)["grad_ascent"]
    assert ga.gap_of_means == pytest.approx((9 + 15 + 6 + 23) / 4)  # 15-6, 100-85, 92-86, 35-12
    assert _by(summary)["ssd"].gap_of_means == pytest.approx((2 + 3 + 3 + 1) / 4)


def test_avg_gap_of_means_skips_absent_and_nan_keys():
    a = SummaryRow("a", "a", False, 1, 0, "ok", mean={"unlearn_acc": 10.0, "retain_acc": 90.0,
                                                      "test_acc": float("nan")})
    o = SummaryRow("retrain", "retrain", True, 1, 0, "ok", mean={"unlearn_acc": 4.0, "retain_acc": 100.0,
                                                               "test_acc": 80.0, "mia_efficacy": 5.0})
    assert avg_gap_of_means(a, o) == pytest.approx((6 + 10) / 2)
    assert math.isnan(avg_gap_of_means(a, None))


def test_gap_over_fewer_metrics_than_the_oracle_is_flagged():
    rows = [_row("retrain", 0, oracle=True, unlearn_acc=5.0, retain_acc=100.0, test_acc=90.0, mia_efficacy=10.0),
            _row("a", 0, unlearn_acc=8.0, retain_acc=97.0, test_acc=90.0, mia_efficacy=float("nan"))]
    s = summarize(rows)
    assert (s[1].gap_n, s[1].gap_n_oracle) == (3, 4)
    assert s[1].gap_of_means == pytest.approx((3 + 3 + 0) / 3)
    assert "| a | 8.00 | 97.00 | 90.00 | — | 2.00 (3 of 4 metrics) | — | 1 |" in to_markdown(s, {})


def test_nan_metric_in_an_ok_row_is_left_out_and_counted():
    rows = [_row("r", 0, oracle=True, unlearn_acc=5.0), _row("a", 0, unlearn_acc=1.0, test_acc=90.0),
            _row("a", 1, unlearn_acc=float("nan"), test_acc=92.0), _row("a", 2, unlearn_acc=3.0, test_acc=None)]
    a = summarize(rows)[1]
    assert a.mean["unlearn_acc"] == pytest.approx(2.0) and a.n["unlearn_acc"] == 2
    assert a.mean["test_acc"] == pytest.approx(91.0) and a.n["test_acc"] == 2


# ----------------------------------------------------------------------------------------------------- markdown
@pytest.fixture(scope="module")
def markdown(summary) -> str:
    rows = _rows()
    meta = build_meta(FIXTURE, rows, config={"data": {"name": "digits"}, "model": {"name": "mlp"}}, skipped_lines=1)
    return to_markdown(summary, meta)


def test_markdown_table_cells(markdown):
    lines = markdown.splitlines()
    # the fixture's rows carry no verdict (written before verdicts existed): the column is empty, failures say `error`
    assert "| Method | UA | RA | TA | MIA-Eff. | Avg. Gap | RTE (s) | seeds | verdict |" in lines
    oracle = "| retrain (oracle) | 6.00 ± 1.00 | 100.00 ± 0.00 | 92.00 ± 2.00 | 12.00 ± 2.00 | 0.00 | 30.00 ± 0.00 | 3 |  |"
    assert oracle in lines
    assert "| finetune | 2.00 ± 1.00 | 99.00 ± 1.00 | 91.00 ± 0.00 | 8.00 ± 2.00 | 2.50 | 2.00 ± 1.00 | 3 |  |" in lines
    assert "| grad_ascent | 15.00 ± 7.07 | 85.00 ± 7.07 | 86.00 ± 2.83 | 35.00 ± 7.07 | 13.25 | 0.50 ± 0.00 | 2 |  |" \
        in lines
    assert "| ssd | 4.00 | 97.00 | 89.00 | 11.00 | 2.25 | 0.25 | 1/2 |  |" in lines  # one seed: no "± 0.00"
    assert "| oom_method | — | — | — | — | — | — | 0/2 | error |" in lines
    assert "Forgotten-class TA" not in markdown  # random scenario: no such column


def test_markdown_header_failures_and_directions(markdown):
    assert markdown.startswith("# unlearnkit report: digits_random10\n")
    assert "**config**: ab12cd34\n" in markdown and HASH[:9] not in markdown
    assert "random: 10% of the training set (n_forget = 135)" in markdown
    assert "**data**: digits" in markdown and "**model**: mlp" in markdown
    failed = markdown.split("## Failed or diverged methods", 1)[1]
    assert "**ssd** (partial; 1 of 2 seeds failed: 0)" in failed
    assert "DivergenceError: loss became inf at step 7" in failed
    assert "**oom_method** (error; 2 of 2 seeds failed: 0, 1)" in failed
    assert "finetune**" not in failed and "grad_ascent" not in failed  # the retry fixed grad_ascent
    assert re.search(r"\*\*UA\*\*: .*Closer to the oracle is better", markdown)
    assert re.search(r"\*\*MIA-Eff\.\*\*: .*Closer to the oracle is better", markdown)
    assert re.search(r"\*\*Avg\. Gap\*\*: .*Lower is better", markdown)


def test_markdown_class_scenario_adds_forgotten_class_column_and_escapes_pipes():
    rows = [_row("retrain", 0, oracle=True, unlearn_acc=100.0, test_acc=95.0, forgotten_test_acc=0.0),
            _row("a|b", 0, unlearn_acc=99.0, test_acc=94.0, forgotten_test_acc=1.5),
            _row("a|b", 1, unlearn_acc=97.0, test_acc=96.0, forgotten_test_acc=2.5)]
    meta = {"run": "c", "config_sha256": "0123456789", "scenario": {"kind": "class", "classes": [3], "n_forget": 9}}
    md = to_markdown(summarize(rows), meta)
    # no mia_efficacy in the rows: no MIA-Eff. column (a metric the run did not compute is not a column of dashes)
    assert "| Method | UA | RA | TA | Forgotten-class TA | Avg. Gap | RTE (s) | seeds |" in md
    # a\|b keeps the table at 8 columns; gap over UA and TA only: (|98-100| + |95-95|) / 2 = 1
    assert "| a\\|b | 98.00 ± 1.41 | — | 95.00 ± 1.41 | 2.00 ± 0.71 | 1.00 | — | 2 |" in md
    with_mia = [{**r, "metrics": {**r["metrics"], "mia_efficacy": 10.0}} for r in rows]
    assert "| TA | Forgotten-class TA | MIA-Eff. | Avg. Gap |" in to_markdown(summarize(with_mia), meta)
    assert "class: forget class 3 (n_forget = 9)" in md and "**config**: 01234567\n" in md


# --------------------------------------------------------------------------------------------------------- HTML
_VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


class _Checker(HTMLParser):
    """Checks strict nesting and collects the circles inside <figure id="scatter">."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.counts: dict[str, int] = {}
        self.scatter_depth: int | None = None
        self.scatter_circles: list[dict[str, str]] = []
        self.scatter_polygons = 0
        self.text: list[str] = []
        self.numeric_attrs: list[str] = []

    def handle_starttag(self, tag, attrs):
        self._open(tag, attrs)
        if tag not in _VOID:
            self.stack.append(tag)
            if tag == "figure" and dict(attrs).get("id") == "scatter":
                self.scatter_depth = len(self.stack)

    def handle_startendtag(self, tag, attrs):
        self._open(tag, attrs)

    def _open(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        a = dict(attrs)
        for k in ("x", "y", "x1", "x2", "y1", "y2", "cx", "cy", "r", "width", "height", "d", "points"):
            if k in a:
                self.numeric_attrs.append(a[k])
        if self.scatter_depth is not None:
            if tag == "circle":
                self.scatter_circles.append(a)
            if tag == "polygon":
                self.scatter_polygons += 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
            return
        if self.scatter_depth == len(self.stack) and tag == "figure":
            self.scatter_depth = None
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _check(page: str) -> _Checker:
    c = _Checker()
    c.feed(page)
    c.close()
    assert c.errors == [], c.errors[:5]
    assert c.stack == [], f"unclosed: {c.stack}"
    return c


@pytest.fixture(scope="module")
def page(summary) -> str:
    rows = _rows()
    meta = build_meta(FIXTURE, rows, config_text=(FIXTURE / "config.resolved.yaml").read_text(), skipped_lines=1)
    return to_html(summary, rows, meta)


def test_html_is_well_formed_and_offline(page):
    c = _check(page)
    assert page.startswith("<!DOCTYPE html>")
    assert c.counts["svg"] == 3 and c.counts["table"] == 3  # scatter, gap bars, time bars; summary, per-seed, methods
    assert "http://" not in page and "https://" not in page
    low = page.lower()
    for bad in ("<script", "<link", "<img", "<iframe", "src=", "url(", "@import", "<object"):
        assert bad not in low, bad
    for attr in c.numeric_attrs:
        assert "nan" not in attr.lower() and "inf" not in attr.lower(), attr


def test_html_scatter_has_one_circle_per_plottable_method_and_an_oracle(page):
    c = _check(page)
    # finetune, grad_ascent, ssd have UA and TA; oom_method has no ok seed; the oracle is a diamond, not a circle
    assert len(c.scatter_circles) == 3
    assert c.scatter_polygons == 1
    scatter = page.split('<figure id="scatter">', 1)[1].split("</figure>", 1)[0]
    assert 'class="oracle-label">oracle</text>' in scatter
    assert "Not plotted: oom_method (no successful seed)" in scatter
    # x = UA: grad_ascent (15) is right of finetune (2); y = TA (SVG y grows downward): finetune (91) above ga (86)
    ft, ga, ssd = c.scatter_circles
    assert float(ga["cx"]) > float(ft["cx"]) and float(ft["cy"]) < float(ga["cy"])
    assert float(ssd["cy"]) > float(ft["cy"])  # ssd TA 89 < finetune TA 91


def test_html_tables_bars_and_config(page):
    text = "".join(_check(page).text)
    assert "92.00 ± 2.00" in text and "retrain (oracle)" in text
    assert "oracle retrain: 30.00 s" in page  # marker on the time chart
    gap = page.split('<figure id="gap-bars">', 1)[1].split("</figure>", 1)[0]
    assert ">2.50</text>" in gap and ">13.25</text>" in gap and ">2.25</text>" in gap
    assert gap.count("<rect") == 3  # no bar for the oracle (0 by definition) or for oom_method
    per_seed = page.split('<section id="per-seed">', 1)[1].split("</section>", 1)[0]
    assert per_seed.count("<tr") == 1 + 13  # header + every valid row, including the replaced error row
    assert per_seed.count('class="superseded"') == 1
    assert "DivergenceError: loss became nan at step 3" in per_seed
    assert "<pre>name: digits_random10\n" in page and "batch_size: 100000" in page


def test_html_escapes_user_strings():
    evil = "<script>alert(1)</script>"
    rows = [_row("retrain", 0, oracle=True, unlearn_acc=5.0, test_acc=90.0, unlearn_seconds=9.0),
            _row(evil, 0, unlearn_acc=6.0, test_acc=91.0, unlearn_seconds=1.0),
            _row("bad", 0, "error", error='<img src=x onerror="alert(2)"> & more')]
    meta = {"run": "<b>run</b>", "config_sha256": "1" * 64, "scenario": rows[0]["scenario"],
            "config_text": "name: '<svg onload=alert(3)>'\n"}
    page = to_html(summarize(rows), rows, meta)
    assert "<script" not in page.lower() and "<img" not in page.lower() and "<svg onload" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "&lt;img src=x onerror=&quot;alert(2)&quot;&gt; &amp; more" in page
    assert "&lt;b&gt;run&lt;/b&gt;" in page
    c = _check(page)
    assert len(c.scatter_circles) == 1


def test_html_single_method_all_equal_and_nan_values():
    rows = [_row("retrain", 0, oracle=True, unlearn_acc=50.0, test_acc=50.0, retain_acc=50.0, mia_efficacy=50.0,
                 unlearn_seconds=0.0),
            _row("same", 0, unlearn_acc=50.0, test_acc=50.0, retain_acc=50.0, mia_efficacy=50.0, unlearn_seconds=0.0),
            _row("nan_ua", 0, unlearn_acc=float("nan"), test_acc=40.0)]
    s = summarize(rows)
    assert s[1].gap_of_means == 0.0
    page = to_html(s, rows, {"run": "eq"})
    c = _check(page)
    assert len(c.scatter_circles) == 1  # "same"; "nan_ua" is skipped and said so
    assert "Not plotted: nan_ua (UA missing or NaN)" in page
    for attr in c.numeric_attrs:
        assert "nan" not in attr.lower() and "inf" not in attr.lower(), attr
    # the all-equal point sits inside the plot, not on a degenerate axis
    (pt,) = c.scatter_circles
    assert 62 < float(pt["cx"]) < 680 - 24 and 34 < float(pt["cy"]) < 440 - 56


def test_html_without_oracle_or_successful_rows_still_renders():
    rows = [_row("a", 0, "error", error="boom")]
    page = to_html(summarize(rows), rows, {})
    c = _check(page)
    assert c.scatter_circles == [] and "Nothing to plot" in page and "boom" in page


def test_nice_domain_handles_equal_values_and_bounds():
    lo, hi, ticks = nice_domain([100.0, 100.0], lo_bound=0.0, hi_bound=100.0)
    assert lo < 100.0 and hi == 100.0 and ticks[-1] == 100.0  # % axis never goes past 100
    lo, hi, ticks = nice_domain([0.0, 0.0], lo_bound=0.0)
    assert lo == 0.0 and hi > 0.0
    lo, hi, ticks = nice_domain([2.0, 13.0])
    assert lo <= 2.0 and hi >= 13.0 and all(b > a for a, b in zip(ticks, ticks[1:]))


# ------------------------------------------------------------------------------------------------ write_reports
def test_write_reports_writes_both_files_atomically(tmp_path):
    d = tmp_path / "run"
    shutil.copytree(FIXTURE, d)
    with pytest.warns(ReportWarning):
        md_path, html_path = write_reports(d)
    assert (md_path, html_path) == (d / "report.md", d / "report.html")
    md = md_path.read_text(encoding="utf-8")
    assert "| finetune | 2.00 ± 1.00 | 99.00 ± 1.00 | 91.00 ± 0.00 | 8.00 ± 2.00 | 2.50 | 2.00 ± 1.00 | 3 |" in md
    assert "**data**: digits" in md and "**model**: mlp" in md  # from config.resolved.yaml
    assert "1 line(s) of results.jsonl were not valid result rows" in md
    assert "1 row(s) replaced by a later row" in md
    _check(html_path.read_text(encoding="utf-8"))
    assert sorted(p.name for p in d.iterdir()) == ["config.resolved.yaml", "report.html", "report.md", "results.jsonl"]


def test_write_reports_without_results_raises_actionable_error(tmp_path):
    with pytest.raises(DataError, match=r"unlearnkit run CONFIG"):
        write_reports(tmp_path)
    with pytest.raises(DataError, match=r"unlearnkit run CONFIG"):
        write_reports(tmp_path / "missing")
    with pytest.raises(DataError, match="unlearnkit run CONFIG"):
        load_rows(tmp_path)
    (tmp_path / "results.jsonl").write_text('{"trunc', encoding="utf-8")
    with pytest.warns(ReportWarning), pytest.raises(DataError, match="no valid result row"):
        write_reports(tmp_path)
    assert not (tmp_path / "report.md").exists()


def test_write_reports_without_config_uses_rows(tmp_path):
    d = _write_run(tmp_path / "r", [_row("retrain", 0, oracle=True, unlearn_acc=5.0),
                                    _row("a", 0, unlearn_acc=7.0)], config=None)
    md_path, html_path = write_reports(d)
    md = md_path.read_text(encoding="utf-8")
    assert md.startswith("# unlearnkit report: t\n") and "| a | 7.00 | — | — | 2.00 | — | 1 |" in md
    assert "config.resolved.yaml was not found" in html_path.read_text(encoding="utf-8")


# ------------------------------------------------------------------------------------------------------ console
def test_console_table_matches_markdown_columns(summary):
    from rich.console import Console

    buf = StringIO()
    Console(file=buf, width=200, color_system=None).print(console_table(summary))
    out = buf.getvalue()
    for header in ("Method", "UA", "RA", "TA", "MIA-Eff.", "Avg. Gap", "RTE (s)", "seeds"):
        assert header in out
    line = next(ln for ln in out.splitlines() if "retrain (oracle)" in ln)
    assert re.search(r"6\.00 ± 1\.00 .* 92\.00 ± 2\.00 .* 0\.00 .* 30\.00 ± 0\.00 .* 3", line)
    assert "0/2" in next(ln for ln in out.splitlines() if "oom_method" in ln)


def test_console_table_prints_markup_in_labels_literally():
    from rich.console import Console

    buf = StringIO()
    Console(file=buf, width=200, color_system=None).print(console_table(summarize([_row("[bold]x[/bold]", 0)])))
    assert "[bold]x[/bold]" in buf.getvalue()


# ------------------------------------------------------------------------------------------------ number format
def test_small_values_keep_their_digits_and_p_values_use_scientific_notation():
    from unlearnkit.report._common import column_sig, fmt_num

    assert [fmt_num(v) for v in (0.0143, 0.0068, 0.0030, 1e-11)] == ["0.014", "0.0068", "0.0030", "1.0e-11"]
    assert [fmt_num(v) for v in (98.0712, 3.48, 0.53, 0.0, -0.25)] == ["98.07", "3.48", "0.53", "0.00", "-0.25"]
    assert fmt_num(float("nan")) == "—" and fmt_num(True) == "—" and fmt_num(None) == "—"
    # a column gets more digits only where two different values would print alike
    assert column_sig([0.0143, 0.0068, 0.0030, 1e-11]) == 2
    assert column_sig([0.0143, 0.0141]) == 3 and fmt_num(0.0143, sig=3) == "0.0143"
    assert column_sig([98.071, 98.074]) == 5 and fmt_num(98.071, sig=5) == "98.071"
    assert column_sig([98.07, 98.07, float("nan")]) == 2  # a real tie stays a tie
    assert column_sig([1.0, 1.0 + 1e-12]) == 2  # equal to 6 significant digits: a real tie


def test_forget_quality_p_values_print_differently_in_report_md_and_html(tmp_path):
    """Issue 13 item 8: 0.0143 / 0.0068 / 0.0030 / 1e-11 printed as 0.01 / 0.01 / 0.00 / 0.00 (false ties)."""
    fq = {"oracle": 1.0, "a": 0.0143, "b": 0.0068, "c": 0.0030, "d": 1e-11}
    rows = [_row("retrain" if m == "oracle" else m, 0, oracle=m == "oracle", forget_quality=v, model_utility=0.5)
            for m, v in fq.items()]
    d = _write_run(tmp_path / "r", rows, config=None)
    md_path, html_path = write_reports(d)
    md, page = md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    want = {"a": "0.014", "b": "0.0068", "c": "0.0030", "d": "1.0e-11"}
    for m, text in want.items():
        assert f"| {m} | {text} | 0.50 |" in md
        assert re.search(rf"{m}</td><td>{re.escape(text)}</td>", page), (m, text)
    assert len(set(want.values())) == 4


def test_means_that_would_print_alike_get_more_digits_in_the_whole_column(tmp_path):
    rows = [_row("retrain", 0, oracle=True, unlearn_acc=5.0), _row("a", 0, unlearn_acc=7.071),
            _row("b", 0, unlearn_acc=7.074), _row("c", 0, unlearn_acc=7.074)]
    md = to_markdown(summarize(rows), {"run": "t"})
    assert "| a | 7.071 |" in md and "| b | 7.074 |" in md and "| c | 7.074 |" in md  # b and c: a real tie
    assert "| retrain (oracle) | 5.000 |" in md


def test_muse_run_header_names_the_corpus_not_a_tofu_split(tmp_path):
    """Issue 13 item 11: the header said `forget10` (TOFU's default split) for MUSE data."""
    from unlearnkit.report import build_meta
    from unlearnkit.report._common import meta_lines

    sc = {"kind": "muse", "source": "muse", "root": "/data/muse/bbc", "corpus": "bbc", "n_forget": 889,
          "n_retain": 1778, "derived": ["raw/retain1 missing: D_r = raw/retain2 (...)"]}
    rows = [{**_row("retrain", 0, oracle=True, verbmem_f=0.2), "scenario": sc}]
    cfg = {"name": "m", "track": "llm", "llm": {"data": {"source": "muse", "root": "/data/muse/bbc",
                                                         "forget_split": "forget10"}}}
    meta = dict(meta_lines(build_meta(tmp_path, rows, config=cfg)))
    assert meta["data"] == "muse (bbc)" and "forget10" not in str(meta)
    assert meta["scenario"].startswith("muse: corpus bbc, D_f = raw/forget (889 chunks), D_r = raw/retain2 (derived)")
    assert "raw/retain1 missing" in meta["scenario"]
    hub = build_meta(tmp_path, rows, config={"track": "llm", "llm": {"data": {"source": "muse",
                                                                               "hub_id": "muse-bench/MUSE-Books"}}})
    assert hub["data"] == "muse (muse-bench/MUSE-Books)"


def test_a_continual_runs_scenario_line_names_the_sequence_not_its_first_rows_fields():
    """The header used to print the first row's fields (step=0, op=L1, n_removed=0, fraction=None, the empty set's
    sha256, … and 'n_forget = 0') although the table shows the last point."""
    from unlearnkit.report._common import scenario_text

    sc = {"kind": "continual", "fraction": None, "count": None, "sequence": "L1 L2 U1 L3 U2 L4", "learner": "der++",
          "tasks": [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]], "step": 0, "op": "L1", "n_forget": 0, "n_removed": 0,
          "forget_ids_sha256": "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}
    text = scenario_text(sc)
    assert text == ("continual: 5 tasks learned and forgotten in the order L1 L2 U1 L3 U2 L4 (learner der++; table: "
                    "after the last operation, L4; report.html's continual section: after every operation)"), text


def test_b_corrective_and_backdoor_metrics_are_in_both_reports(tmp_path):
    """The corrective metric's numbers (ASR, clean / corrupted accuracy) and backdoor_detection's
    (backdoor_exposure_share, backdoor_detected) used to be in neither report.md nor report.html (the HTML had only
    curves of the corrective keys). Expected cells computed by hand: mean ± sample std (ddof = 1) over 2 seeds."""
    def row(method, seed, p, role, asr, clean, corrupted, share, detected, status="ok"):
        return {"run": "bd", "method": method, "seed": seed, "role": role, "is_oracle": role == "oracle",
                "status": status, "identified_fraction": p, "dimensions": ["identified_fraction"],
                "scenario": {"kind": "corrective", "manipulation": "poison", "identified_fraction": p},
                "metrics": {"unlearn_acc": 1.0, "retain_acc": 99.0, "test_acc": 95.0, "attack_success_rate": asr,
                            "clean_acc": clean, "corrupted_acc": corrupted, "backdoor_exposure_share": share,
                            "backdoor_detected": detected}}

    rows = [row("clean_unlearning", 0, 0.5, "method", 10.0, 90.0, 80.0, 30.0, 100.0),
            row("clean_unlearning", 1, 0.5, "method", 20.0, 94.0, 70.0, 10.0, 0.0),
            row("clean_unlearning", 0, 1.0, "method", 4.0, 96.0, 88.0, 12.0, 0.0),
            row("clean_unlearning", 1, 1.0, "method", 4.0, 96.0, 88.0, 12.0, 0.0, status="error"),  # not averaged
            row("retrain", 0, 1.0, "oracle", 1.0, 97.0, 95.0, 5.0, 0.0),
            row("retrain", 1, 1.0, "oracle", 3.0, 95.0, 93.0, 7.0, 0.0),
            row("original", 0, 1.0, "original", 99.0, 97.0, 2.0, 90.0, 100.0)]
    rows[3]["metrics"] = {}
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md_path, html_path = write_reports(tmp_path)
    md, page = md_path.read_text(), html_path.read_text()
    assert "## Corrective and backdoor metrics" in md
    assert ("| Method | p (%) | ASR (%) | Corrupted acc. (%) | Clean acc. (%) | Exposure share (%) | "
            "Backdoor detected (%) |") in md
    # oracle first, then θ_o, then the method by p; {10, 20}: 15 ± 7.1; {90, 94}: 92 ± 2.8; {30, 10}: 20 ± 14.1
    i_or = md.index("| retrain (oracle) | 100 | 2.0 ± 1.4 | 94.0 ± 1.4 | 96.0 ± 1.4 | 6.0 ± 1.4 | 0.0 ± 0.0 |")
    i_o = md.index("| original | 100 | 99.0 | 2.0 | 97.0 | 90.0 | 100.0 |")
    i_50 = md.index("| clean_unlearning | 50 | 15.0 ± 7.1 | 75.0 ± 7.1 | 92.0 ± 2.8 | 20.0 ± 14.1 | 50.0 ± 70.7 |")
    i_100 = md.index("| clean_unlearning | 100 | 4.0 | 88.0 | 96.0 | 12.0 | 0.0 |")  # the failed seed is left out
    assert i_or < i_o < i_50 < i_100
    assert '<section id="backdoor">' in page and "<td>15.0 ± 7.1</td>" in page and "<th>Exposure share (%)</th>" in page
    # a run without these keys gets neither section
    from unlearnkit.report.backdoor_section import html_section, markdown_section

    plain = [{**r, "metrics": {"unlearn_acc": 1.0}} for r in rows]
    assert markdown_section(plain) == "" and html_section(plain) == ""
