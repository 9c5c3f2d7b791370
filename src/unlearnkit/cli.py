"""Command line: ``unlearnkit run | report | methods | metrics | schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from unlearnkit.errors import UnlearnkitError

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__)
# tables are wide: when output goes to a file or pipe (no terminal width to read), use 140 columns, not rich's 80
out = Console() if sys.stdout.isatty() else Console(width=140)
err_console = Console(stderr=True)

DEFAULT_CONFIG = "digits_random10"


def _fail(err: Exception) -> None:
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(str(err))}")
    raise typer.Exit(2)


@app.command()
def run(
    config: Optional[str] = typer.Argument(None, help="experiment YAML (default: the bundled digits_random10)"),
    set_: list[str] = typer.Option([], "--set", help="override a config value, e.g. --set train.lr=0.05"),
    no_report: bool = typer.Option(False, "--no-report", help="skip writing report.md / report.html"),
) -> None:
    """Run an experiment: train/load θ_o and θ_r, run every method × seed, evaluate, write results and reports."""
    from unlearnkit.bench import run_experiment
    from unlearnkit.config import load_config
    from unlearnkit.report import console_table, load_rows, summarize

    try:
        cfg = load_config(config or DEFAULT_CONFIG, set_)
        outcome = run_experiment(cfg, console=err_console, write_report=not no_report)
        summary = summarize(load_rows(outcome.run_dir))
    except UnlearnkitError as err:
        _fail(err)
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: finished rows are saved; run the same command again to resume")
        raise typer.Exit(130) from None
    out.print(console_table(summary))
    if outcome.new_rows == 0:
        out.print("nothing new to run: every (method, seed) row is already in results.jsonl "
                  "(resumed run; delete the run folder to start over)")
    else:
        reuse = (f"reused cached {' and '.join(sorted(set(outcome.reused)))} model(s)" if outcome.reused
                 else "trained θ_o and θ_r (now cached for later runs)")
        out.print(f"{outcome.new_rows} new row(s); {reuse}.")
    out.print(f"Results: {outcome.run_dir / 'results.jsonl'}")
    if not no_report:
        out.print(f"Report: {outcome.run_dir / 'report.html'} and report.md")


@app.command()
def report(
    run_dir: Path = typer.Argument(..., help="a run folder holding results.jsonl"),
    neurips: bool = typer.Option(False, "--neurips", help="also compute the NeurIPS-2023 score (needs ≥ 3 seeds; "
                                 "~10 ms per forget example and method), cached in neurips.json"),
    max_time_fraction: Optional[float] = typer.Option(None, help="NeurIPS time cap: score 0 when unlearning takes "
                                                      "more than this fraction of retraining (off by default)"),
) -> None:
    """Rebuild report.md and report.html of a run from its result files only."""
    from unlearnkit.report import compute_neurips, console_table, load_rows, summarize, write_reports

    try:
        if neurips:
            compute_neurips(run_dir, max_time_fraction=max_time_fraction)
        md, html = write_reports(run_dir)
        out.print(console_table(summarize(load_rows(run_dir))))
    except UnlearnkitError as err:
        _fail(err)
        return
    out.print(f"wrote {md} and {html}")


def _component_table(kind: str) -> Table:
    from unlearnkit.methods import METHODS
    from unlearnkit.metrics import METRICS

    reg = METHODS if kind == "method" else METRICS
    t = Table(title=f"registered {kind}s")
    t.add_column("name")
    t.add_column("kind" if kind == "method" else "keys")
    t.add_column("source")
    for name, e in reg.items():
        obj = e.obj
        if kind == "method":
            t.add_row(name, getattr(obj, "kind", ""), getattr(obj, "source", ""))
        else:
            t.add_row(name, ", ".join(getattr(obj, "keys", {})), getattr(obj, "source", ""))
    return t


def markdown_list(kind: str) -> str:
    """A markdown table of the registered methods or metrics (the README's lists are generated from it)."""
    from unlearnkit.methods import METHODS
    from unlearnkit.metrics import METRICS

    if kind == "method":
        lines = ["| method | kind | needs retain | needs labels | source |", "| --- | --- | --- | --- | --- |"]
        for name, e in METHODS.items():
            o = e.obj
            lines.append(f"| `{name}` | {o.kind} | {'yes' if o.needs_retain else 'no'} | "
                         f"{'yes' if o.needs_labels else 'no'} | {o.source} |")
    else:
        lines = ["| metric | keys (direction) | source |", "| --- | --- | --- |"]
        for name, e in METRICS.items():
            keys = "; ".join(f"`{k}`: {v}" for k, v in getattr(e.obj, "keys", {}).items())
            lines.append(f"| `{name}` | {keys} | {getattr(e.obj, 'source', '')} |")
    return "\n".join(lines) + "\n"


@app.command()
def methods(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    markdown: bool = typer.Option(False, "--markdown", help="markdown table (as in the README)"),
) -> None:
    """List the registered unlearning methods with their kind and source."""
    from unlearnkit.methods import METHODS

    if markdown:
        sys.stdout.write(markdown_list("method"))
        return
    if as_json:
        out.print_json(json.dumps({n: {"kind": e.obj.kind, "source": e.obj.source,
                                       "defaults": e.config().model_dump(mode="json") if e.config else {}}
                                   for n, e in METHODS.items()}))
        return
    out.print(_component_table("method"))


@app.command()
def metrics(markdown: bool = typer.Option(False, "--markdown", help="markdown table (as in the README)")) -> None:
    """List the registered metrics, the keys they write and their sources."""
    if markdown:
        sys.stdout.write(markdown_list("metric"))
        return
    out.print(_component_table("metric"))


@app.command()
def schema() -> None:
    """Print the JSON Schema of the experiment config."""
    from unlearnkit.config import ExperimentConfig

    sys.stdout.write(json.dumps(ExperimentConfig.model_json_schema(), indent=2) + "\n")


def main() -> None:
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
