"""Command line: ``unlearnkit run | tune | report | methods | metrics | schema``."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any, Optional

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
    from unlearnkit.bench import load_config, run_experiment
    from unlearnkit.report import console_table, load_rows, summarize

    try:
        cfg = load_config(config or DEFAULT_CONFIG, set_)
        outcome = run_experiment(cfg, console=err_console, write_report=not no_report)
        summary = summarize(load_rows(outcome.run_dir)) if outcome.is_main else None
    except UnlearnkitError as err:
        _fail(err)
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: finished rows are saved; run the same command again to resume")
        raise typer.Exit(130) from None
    _shutdown_processes()
    if not outcome.is_main:  # a rank > 0 of a multi-process launch: rank 0 prints and writes
        return
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


def _shutdown_processes() -> None:
    """End a multi-process launch cleanly (every rank waits for rank 0's reports, then leaves the process group)."""
    import torch.distributed as tdist

    if tdist.is_available() and tdist.is_initialized():
        tdist.barrier()
        tdist.destroy_process_group()


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


@app.command()
def tune(
    config: Optional[str] = typer.Argument(None, help="experiment YAML (default: the bundled digits_random10)"),
    method: list[str] = typer.Option([], "--method", help="method label to tune (repeat; default: every method "
                                     "with a search space)"),
    trials: Optional[int] = typer.Option(None, "--trials", help="finished trials per method's study (a rerun "
                                         "continues up to N; default 20 when --seconds is not given)"),
    seconds: Optional[float] = typer.Option(None, "--seconds", help="wall-clock budget per method for this call"),
    workers: int = typer.Option(1, "--workers", help="processes sharing each study (SQLite storage)"),
    seeds: list[int] = typer.Option([], "--seeds", help="seeds the objective averages over (repeat; default: the "
                                    "experiment's)"),
    tuning_seed: int = typer.Option(1, "--tuning-seed", help="seed of the tuning forget set's draw"),
    storage: Optional[str] = typer.Option(None, "--storage", help="Optuna storage URL (default: sqlite "
                                          "<run folder>/tune/<label>.db)"),
    std_weight: float = typer.Option(1.0, "--std-weight", help="objective = mean + this × std of the gaps over "
                                     "seeds and tuning sets (0: the plain mean)"),
    draws: int = typer.Option(1, "--draws", help="tuning forget sets per seed (more: a steadier objective, slower)"),
    set_: list[str] = typer.Option([], "--set", help="override a config value, e.g. --set engine.threads=1"),
) -> None:
    """Search each method's hyperparameters (Optuna) on a tuning forget set disjoint from the evaluation D_f; write
    the search tables and a tuned config (<run folder>/tune/tuned.yaml) that `unlearnkit run` accepts."""
    from unlearnkit.bench import load_config
    from unlearnkit.bench.tune import compose_source, tune_experiment

    def progress(label: str, info: dict[str, Any]) -> None:
        shown = ", ".join(f"{k}={_short(v)}" for k, v in info["params"].items())
        what = f"{info['value']:.4g}" if info["value"] is not None else f"failed ({info['error'][:120]})"
        err_console.print(f"  {label} trial {info['trial']}: {what}  [{shown}]", markup=False, highlight=False)

    try:
        raw = compose_source(config or DEFAULT_CONFIG, set_)
        cfg = load_config(config or DEFAULT_CONFIG, set_)
        outcome = tune_experiment(cfg, methods=method or None, trials=trials, seconds=seconds, workers=workers,
                                  seeds=seeds or None, tuning_seed=tuning_seed, storage=storage, raw=raw,
                                  std_weight=std_weight, draws=draws,
                                  console=err_console, on_trial=progress)
    except UnlearnkitError as err:
        _fail(err)
        return
    except KeyboardInterrupt:
        err_console.print("interrupted: finished trials are saved in the study; run the same command again to go on")
        raise typer.Exit(130) from None
    t = Table(title="unlearnkit tune: best settings (objective = mean + std over seeds of the mean |θ_u − θ_r| over "
                    "the gap keys on the tuning forget sets; lower is better)")
    for col in ("method", "trials", "θ_o", "best", "best trial", "settings"):
        t.add_column(col)
    for label, s in outcome.summaries.items():
        best = s.get("best")
        t.add_row(label, str(s["n_finished"]), f"{s['original_objective']:.4g}",
                  f"{best['value']:.4g}" if best else "—", str(best["trial"]) if best else "—",
                  ", ".join(f"{k}={_short(v)}" for k, v in best["searched"].items()) if best else "no finished trial")
    out.print(t)
    if outcome.fragment is not None:
        out.print(f"Tuned config: {outcome.fragment}  (unlearnkit run {outcome.fragment})")
        sys.stdout.write(outcome.fragment.read_text(encoding="utf-8"))
    out.print(f"Search tables: {outcome.tune_dir}/<label>.json (shown by `unlearnkit report <run folder>`)")


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


TRACK_ORDER = ("classifier", "llm", "graph", "recsys")


def _sorted_entries(kind: str, track: str | None = None) -> list[tuple[str, Any]]:
    """Registered (name, entry) pairs grouped by track (classifier, llm, graph, recsys, others), then by name."""
    from unlearnkit.methods import METHODS
    from unlearnkit.metrics import METRICS

    reg = METHODS if kind == "method" else METRICS
    items = [(n, e) for n, e in reg.items() if track is None or getattr(e.obj, "track", "classifier") == track]

    def key(item: tuple[str, Any]) -> tuple[int, str, str]:
        t = getattr(item[1].obj, "track", "classifier")
        return (TRACK_ORDER.index(t) if t in TRACK_ORDER else len(TRACK_ORDER), t, item[0])

    return sorted(items, key=key)


def _component_table(kind: str, track: str | None = None) -> Table:
    t = Table(title=f"registered {kind}s" + (f" ({track})" if track else ""))
    t.add_column("name")
    t.add_column("track")
    t.add_column("kind" if kind == "method" else "keys")
    if kind == "method":
        t.add_column("intent")
    t.add_column("source")
    for name, e in _sorted_entries(kind, track):
        obj = e.obj
        tr = getattr(obj, "track", "classifier")
        if kind == "method":
            t.add_row(name, tr, getattr(obj, "kind", ""), getattr(obj, "intent", ""), getattr(obj, "source", ""))
        else:
            t.add_row(name, tr, ", ".join(getattr(obj, "keys", {})), getattr(obj, "source", ""))
    return t


def markdown_list(kind: str, track: str | None = None) -> str:
    """A markdown table of the registered methods or metrics (the README's lists are generated from it); only
    ``track``'s entries when given."""
    if kind == "method":
        lines = ["| method | track | kind | intent | needs retain | needs labels | source |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
        for name, e in _sorted_entries("method", track):
            o = e.obj
            lines.append(f"| `{name}` | {getattr(o, 'track', 'classifier')} | {o.kind} | {getattr(o, 'intent', '')} "
                         f"| {'yes' if o.needs_retain else 'no'} | {'yes' if o.needs_labels else 'no'} | {o.source} |")
    else:
        lines = ["| metric | track | keys (direction) | source |", "| --- | --- | --- | --- |"]
        for name, e in _sorted_entries("metric", track):
            keys = "; ".join(f"`{k}`: {v}" for k, v in getattr(e.obj, "keys", {}).items())
            lines.append(f"| `{name}` | {getattr(e.obj, 'track', 'classifier')} | {keys} | "
                         f"{getattr(e.obj, 'source', '')} |")
    return "\n".join(lines) + "\n"


def _check_track(track: str | None) -> None:
    if track is not None:
        from unlearnkit.bench.tracks import TRACKS

        TRACKS.entry(track)


def _listing(kind: str, track: str | None, markdown: bool) -> bool:
    """Shared part of ``methods`` / ``metrics``: check the track, print the markdown list if asked.
    Returns True when the command is done."""
    try:
        _check_track(track)
    except UnlearnkitError as err:
        _fail(err)
        return True
    if markdown:
        sys.stdout.write(markdown_list(kind, track))
        return True
    return False


@app.command()
def methods(
    as_json: bool = typer.Option(False, "--json", help="machine-readable output"),
    markdown: bool = typer.Option(False, "--markdown", help="markdown table (as in the README)"),
    track: Optional[str] = typer.Option(None, "--track", help="only this track's methods (classifier, llm, ...)"),
) -> None:
    """List the registered unlearning methods with their track, kind and source."""
    if _listing("method", track, markdown):
        return
    if as_json:
        out.print_json(json.dumps({n: {"track": getattr(e.obj, "track", "classifier"), "kind": e.obj.kind,
                                       "intent": getattr(e.obj, "intent", ""), "source": e.obj.source,
                                       "defaults": e.config().model_dump(mode="json") if e.config else {}}
                                   for n, e in _sorted_entries("method", track)}))
        return
    out.print(_component_table("method", track))


@app.command()
def metrics(
    markdown: bool = typer.Option(False, "--markdown", help="markdown table (as in the README)"),
    track: Optional[str] = typer.Option(None, "--track", help="only this track's metrics (classifier, llm, ...)"),
) -> None:
    """List the registered metrics, the keys they write and their sources."""
    if _listing("metric", track, markdown):
        return
    out.print(_component_table("metric", track))


@app.command()
def schema(
    track: Optional[str] = typer.Option(None, "--track", help="print the schema of this track's experiment only "
                                                              "(classifier, llm, graph, recsys, generative, ...)"),
) -> None:
    """Print the JSON Schema of the experiment config: the union over tracks, or one track's experiment."""
    from unlearnkit.bench import experiment_schema
    from unlearnkit.bench.tracks import TRACKS

    if track is None:
        sys.stdout.write(json.dumps(experiment_schema(), indent=2) + "\n")
        return
    try:
        entry = TRACKS.entry(track)
    except UnlearnkitError as err:
        _fail(err)
        return
    sys.stdout.write(json.dumps(entry.config.model_json_schema(), indent=2) + "\n")


# deletion service: serve, delete, ledger verify (service/cli.py; imports nothing heavy until a command runs)
from unlearnkit.service.cli import register as _register_service  # noqa: E402

_register_service(app)


def _log_to_stderr() -> None:
    """Show unlearnkit's log lines (memory estimates before training, reference choices) on stderr; rank 0 only."""
    import logging
    import os

    lg = logging.getLogger("unlearnkit")
    if lg.handlers:
        return
    from rich.logging import RichHandler

    lg.addHandler(RichHandler(console=err_console, show_time=False, show_path=False))
    lg.setLevel(logging.INFO if os.environ.get("RANK", "0") == "0" else logging.WARNING)
    lg.propagate = False


def main() -> None:
    _log_to_stderr()
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
