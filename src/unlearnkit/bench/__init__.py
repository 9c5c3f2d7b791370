"""Experiment runner: resolve a config against the registries, walk its schedule (method × seed × point), cache
θ_o / θ_r by lineage, resume, write results.jsonl."""

from unlearnkit.bench.resolve import experiment, experiment_schema, load_config, parse, resolve
from unlearnkit.bench.runner import RunOutcome, Runner, read_results, run_dir_for, run_experiment

__all__ = ["RunOutcome", "Runner", "experiment", "experiment_schema", "load_config", "parse", "read_results", "resolve",
           "run_dir_for", "run_experiment"]
