"""Experiment runner: expand (method × seed), cache θ_o/θ_r, resume, results.jsonl."""

from unlearnkit.bench.runner import RunOutcome, Runner, read_results, run_dir_for, run_experiment

__all__ = ["RunOutcome", "Runner", "read_results", "run_dir_for", "run_experiment"]
