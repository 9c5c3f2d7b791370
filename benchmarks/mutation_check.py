"""Mutation check: apply known bugs to a copy of the repository, one at a time, and report which ones the tests catch.

Usage (from the repository root, with the test extras installed):
    PYTHONPATH=src OMP_NUM_THREADS=1 python benchmarks/mutation_check.py [--only ID ...] [--slow] [--list]
        [--out benchmarks/results/mutation_check.md] [--timeout 900]

Each mutation replaces one exact snippet of one file (the script refuses a snippet that is not found exactly once,
so a refactor that moves the code shows up as "stale" instead of a silent pass) and runs only the tests written to
catch it, in a temporary copy of the checkout (``git ls-files``: tracked and new, not ignored), with that copy's
``src`` and ``tests`` first on PYTHONPATH. A mutation is

* **caught** when pytest fails (exit 1), or when a test that ran on the unmutated copy now skips (the CI skip check,
  .ci/check_skips.py, fails such a run);
* **missed** when the tests still pass: the tests cannot see that bug;
* **error** when pytest could not run (exit 2–5) or timed out.

First every selected test runs once on the unmutated copy, which must pass. Writes a markdown table to ``--out`` and
exits 1 if any mutation was missed or errored. Not collected by pytest (it lives in benchmarks/).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Mutation:
    id: str
    what: str  # the bug, in words
    edits: tuple[tuple[str, str, str], ...]  # (file, old snippet, new snippet)
    tests: tuple[str, ...]  # pytest node ids / files (relative to the root)
    slow: bool = False
    extra: tuple[str, ...] = field(default=())  # extra pytest arguments (e.g. -m slow)


GRAPH_METRICS = "src/unlearnkit/metrics/graph.py"
M_UTIL = (GRAPH_METRICS, 'vals = {"test_acc": 100.0 * float((pred[test] == t.data.y[test]).double().mean())}',
          'vals = {"test_acc": 100.0 * float((pred[test] != t.data.y[test]).double().mean())}')
M_UTIL_F = (GRAPH_METRICS, 'float((pred[f] == t.data.y[f]).double().mean()) if len(f)',
            'float((pred[f] != t.data.y[f]).double().mean()) if len(f)')
M_AUROC = (GRAPH_METRICS, '{"forget_auroc": auroc(s_keep, s_del)', '{"forget_auroc": auroc(s_del, s_keep)')
M_MIA = (GRAPH_METRICS, '"mi_ratio": float(p_o.mean() / max(p_u.mean(), 1e-12))',
         '"mi_ratio": float(p_u.mean() / max(p_o.mean(), 1e-12))')
M_TV = (GRAPH_METRICS, '{"oracle_tv": 100.0 * float(tv.mean())', '{"oracle_tv": 100.0 - 100.0 * float(tv.mean())')
GOLDEN_GRAPH = ("tests/graph/test_graph_metrics_golden.py",)
CURVE_TESTS = (
    "tests/unit/test_sequential.py::test_runner_sequential_report_draws_curves_over_requests",
    "tests/unit/test_corrective.py::test_runner_corrective_report_draws_curves_over_p",
    "tests/llm/test_llm_stages.py::test_sequential_report_has_curves",
    "tests/llm/test_llm_stages.py::test_report_curves_over_sizes_and_requests",
)
SVC_CLI = "src/unlearnkit/service/cli.py"
FLAGS = "tests/integration/test_cli_flags.py"

MUTATIONS: tuple[Mutation, ...] = (
    # -- the ten weak tests of issue 20 ------------------------------------------------------------------------------
    Mutation("fisher-noise-0", "Fisher forgetting adds no noise",
             (("src/unlearnkit/methods/classifier/fisher_forgetting.py", "p.add_((std * z).to(",
               "p.add_((0.0 * std * z).to("),),
             ("tests/unit/methods/test_fisher_forgetting.py::test_noise_statistics_over_many_draws",)),
    Mutation("fisher-noise-scale", "Fisher forgetting's noise is 2x too large",
             (("src/unlearnkit/methods/classifier/fisher_forgetting.py", "std = var[name].sqrt()",
               "std = 2.0 * var[name].sqrt()"),),
             ("tests/unit/methods/test_fisher_forgetting.py::test_noise_statistics_over_many_draws",)),
    Mutation("eraser-partition-always-bekm", "GraphEraser ignores partition: always BEKM",
             (("src/unlearnkit/methods/graph/graph_eraser.py", 'if cfg.partition == "bekm":', "if True:"),),
             ("tests/graph/test_graph_known_faults.py::test_c48_graph_eraser_either_partition_from_a_fresh_folder",
              "tests/graph/test_graph_known_faults.py::test_c48_the_partition_setting_decides_the_partition")),
    Mutation("eraser-partition-always-random", "GraphEraser ignores partition: always random",
             (("src/unlearnkit/methods/graph/graph_eraser.py", 'if cfg.partition == "bekm":', "if False:"),),
             ("tests/graph/test_graph_known_faults.py::test_c48_the_partition_setting_decides_the_partition",)),
    Mutation("graph-method-always-refuses", "graph_grad_ascent always refuses with a MethodError naming node/edge",
             (("src/unlearnkit/methods/graph/grad_ascent.py",
               "    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:\n",
               "    def _unlearn_graph(self, model: nn.Module, task, engine, context: UnlearnContext) -> UnlearnResult:\n"
               "        raise MethodError('graph_grad_ascent cannot serve this node or edge deletion')\n"),),
             ("tests/graph/test_graph_known_faults.py::test_c39_every_graph_method_runs_with_its_defaults_on_karate",)),
    Mutation("muse-knowmem-swapped", "MUSE writes knowmem_f and knowmem_r swapped",
             (("src/unlearnkit/metrics/muse.py", '(("f", "knowmem_forget"), ("r", "knowmem_retain"))',
               '(("r", "knowmem_forget"), ("f", "knowmem_retain"))'),),
             ("tests/llm/test_eval_configs.py::test_muse_fixture_runs",
              "tests/llm/test_eval_configs.py::test_muse_knowmem_keys_score_their_own_split")),
    Mutation("api-test-lr-1e-12", "the API test unlearns with lr 1e-12 (a no-op)",
             (("tests/integration/test_api.py", '"grad_ascent", lr=0.05, epochs=5', '"grad_ascent", lr=1e-12, epochs=5'),),
             ("tests/integration/test_api.py::test_unlearn_and_evaluate_a_trained_user_model",)),
    Mutation("api-drops-params", "uk.unlearn ignores the method parameters it is given",
             (("src/unlearnkit/api.py", "m = METHODS.build(method, params)", "m = METHODS.build(method, {})"),),
             ("tests/integration/test_api.py::test_unlearn_and_evaluate_a_trained_user_model",)),
    Mutation("tofu-tiny-ga-noop", "the LLM gradient-ascent step does nothing (loss × 0)",
             (("src/unlearnkit/methods/llm/ga.py", "return -mean_token_nll(model, batch)",
               "return -0.0 * mean_token_nll(model, batch)"),),
             ("tests/llm/test_eval_tofu_tiny.py::test_tofu_tiny_end_to_end",), slow=True, extra=("-m", "slow")),
    Mutation("lira-phi-wrong", "LiRA records the probability p_y instead of its logit as φ",
             (("src/unlearnkit/metrics/lira.py", "conf[k] = logit_confidence(pred.logits.numpy(), pred.labels.numpy())",
               "conf[k] = np.exp(-np.logaddexp(0, -logit_confidence(pred.logits.numpy(), pred.labels.numpy())))"),),
             ("tests/golden/test_lira.py::test_lira_shadows_record_membership_and_phi",)),
    Mutation("report-curves-flat-0", "every report curve is drawn flat at 0",
             (("src/unlearnkit/report/figures.py", "tuple(float(np.mean(pts[x])) for x in xs)",
               "tuple(0.0 for x in xs)"),), CURVE_TESTS),
    Mutation("report-curves-axis-off", "curve markers are placed on a wrong y scale (y axis flipped)",
             (("src/unlearnkit/report/charts.py", "return mt + ph - (v - y0) / (y1 - y0) * ph\n\n    out = _axes(",
               "return mt + (v - y0) / (y1 - y0) * ph\n\n    out = _axes("),), CURVE_TESTS),
    Mutation("wheel-build-broken", "the wheel build fails (unknown build backend)",
             (("pyproject.toml", 'build-backend = "setuptools.build_meta"', 'build-backend = "setuptools.no_such"'),),
             ("tests/integration/test_packaging.py",)),
    Mutation("tofu-path-machine-specific", "the TOFU test reads a fixed path of another machine (so it skips)",
             (("tests/llm/test_core_data.py", 'TOFU = shared_path("tofu")',
               'TOFU = Path("/nonexistent-machine/shared/data/tofu")'),),
             ("tests/llm/test_core_data.py::test_tofu_real_files",)),
    Mutation("absolute-path-in-repo", "a benchmark defaults to a home-directory path",
             (("benchmarks/graph.py", 'ap.add_argument("--output-dir", default="/tmp/unlearnkit-graph-bench")',
               'ap.add_argument("--output-dir", default="/' + 'home/dev/unlearnkit-graph-bench")'),),
             ("tests/unit/test_repository_hygiene.py",)),
    # -- graph metrics (golden tests) ----------------------------------------------------------------------------------
    Mutation("graph-metrics-all-inverted", "all four graph metrics inverted at once",
             (M_UTIL, M_UTIL_F, M_AUROC, M_MIA, M_TV), GOLDEN_GRAPH),
    Mutation("graph-utility-inverted", "graph_utility counts wrong predictions", (M_UTIL, M_UTIL_F), GOLDEN_GRAPH),
    Mutation("graph-forget-auroc-inverted", "graph_forget_auroc swaps positives and negatives", (M_AUROC,),
             GOLDEN_GRAPH),
    Mutation("graph-mi-ratio-inverted", "graph_mia's MI ratio is p_u / p_o", (M_MIA,), GOLDEN_GRAPH),
    Mutation("graph-oracle-tv-inverted", "graph_oracle_distance reports 100 − TV", (M_TV,), GOLDEN_GRAPH),
    Mutation("graph-mia-wrong-class", "graph_mia takes the attack's non-member probability",
             ((GRAPH_METRICS, 'p_u = attack.predict_proba(_attack_features(ctx, ctx.model, "retain", f))[:, 1]',
               'p_u = attack.predict_proba(_attack_features(ctx, ctx.model, "retain", f))[:, 0]'),), GOLDEN_GRAPH),
    # -- GraphSAGE / GAT / subclass ------------------------------------------------------------------------------------
    Mutation("sage-is-gcn", "arch: sage builds GCN layers",
             (("src/unlearnkit/models/graph.py", "convs.append(SAGEConv(a, b, bias=bias))",
               "convs.append(GCNConv(a, b, bias=bias))"),), ("tests/graph/test_graph_archs.py",)),
    Mutation("gat-no-self-loops", "GAT's output layer attends without self-loops",
             (("src/unlearnkit/models/graph.py", "GATConv(a, b, heads=1, dropout=dropout, bias=bias)",
               "GATConv(a, b, heads=1, dropout=dropout, bias=bias, add_self_loops=False)"),),
             ("tests/graph/test_graph_archs.py",)),
    Mutation("subclass-forgets-the-superclass", "subclass forgets every fine class of the super-class",
             (("src/unlearnkit/data/scenarios.py",
               "        mask = np.isin(train.labels, scenario.classes)\n        forget = train.take(mask, \"forget\")\n"
               "        rec.update(classes=list(scenario.classes), superclasses=",
               "        sup = {data.superclasses[c] for c in scenario.classes}\n"
               "        mask = np.isin(train.labels, [c for c, s in enumerate(data.superclasses) if s in sup])\n"
               "        forget = train.take(mask, \"forget\")\n"
               "        rec.update(classes=list(scenario.classes), superclasses="),),
             ("tests/unit/test_subclass_scenario.py",)),
    # -- CLI flags ------------------------------------------------------------------------------------------------------
    Mutation("cli-markdown-ignores-track", "methods/metrics --markdown ignore --track",
             (("src/unlearnkit/cli.py", "sys.stdout.write(markdown_list(kind, track))",
               "sys.stdout.write(markdown_list(kind))"),), (FLAGS,)),
    Mutation("cli-schema-ignores-track", "schema --track prints the whole config's schema",
             (("src/unlearnkit/cli.py", "    if track is None:\n        sys.stdout.write(json.dumps(ExperimentConfig",
               "    if True:\n        sys.stdout.write(json.dumps(ExperimentConfig"),), (FLAGS,)),
    Mutation("cli-report-writes-nothing", "report RUN_DIR does not rebuild the files",
             (("src/unlearnkit/cli.py", "        md, html = write_reports(run_dir)",
               "        md, html = run_dir / 'report.md', run_dir / 'report.html'"),), (FLAGS,)),
    Mutation("cli-max-time-fraction-ignored", "report --max-time-fraction is not passed on",
             (("src/unlearnkit/cli.py", "compute_neurips(run_dir, max_time_fraction=max_time_fraction)",
               "compute_neurips(run_dir)"),), (FLAGS,)),
    Mutation("delete-token-flag-ignored", "delete --token loses to $UNLEARNKIT_TOKEN",
             ((SVC_CLI, 'headers = {"Authorization": f"Bearer {token}"}',
               'headers = {"Authorization": f"Bearer {os.environ.get(\'UNLEARNKIT_TOKEN\') or token}"}'),), (FLAGS,)),
    Mutation("delete-idempotency-key-ignored", "delete --idempotency-key is replaced by a fresh key",
             ((SVC_CLI, 'idempotency_key or f"cli-{uuid.uuid4().hex}"', 'f"cli-{uuid.uuid4().hex}"'),), (FLAGS,)),
    Mutation("delete-no-wait-ignored", "delete --no-wait still polls to the end",
             ((SVC_CLI, 'if not wait or status["state"] in ("done", "failed")',
               'if status["state"] in ("done", "failed")'),),
             (FLAGS,)),
    Mutation("delete-timeout-ignored", "delete --timeout is replaced by a fixed 3 s",
             ((SVC_CLI, "deadline = time.monotonic() + timeout", "deadline = time.monotonic() + 3.0"),), (FLAGS,)),
    Mutation("ledger-expected-head-ignored", "ledger verify --expected-head is not checked",
             ((SVC_CLI, "report = verify_ledger(path, expected_head=expected_head)", "report = verify_ledger(path)"),),
             (FLAGS,)),
    Mutation("serve-host-ignored", "serve --host is not applied",
             ((SVC_CLI, '([f"host={host}"] if host else [])', "[]"),), (FLAGS,)),
)


def copy_checkout(dst: Path) -> None:
    """Copy the files git knows (tracked and untracked-but-not-ignored) to ``dst``."""
    out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard", "-z"], check=True,
                         capture_output=True).stdout.decode()
    for rel in filter(None, out.split("\0")):
        src = ROOT / rel
        if src.is_file():
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)


def shared_data() -> str | None:
    """The checkout's shared data folder (as tests/testkit.py finds it): the temporary copy has none beside it."""
    sys.path.insert(0, str(ROOT / "tests"))
    try:
        from testkit import shared_data_dir
    finally:
        sys.path.pop(0)
    d = shared_data_dir()
    return None if d is None else str(d)


def run_pytest(copy: Path, tests: tuple[str, ...], extra: tuple[str, ...], timeout: float,
               junit: Path) -> tuple[int | str, set[str], float]:
    """(pytest exit code or "timeout", ids of the tests that skipped, seconds)."""
    env = {**os.environ, "PYTHONPATH": f"{copy / 'src'}{os.pathsep}{copy / 'tests'}", "OMP_NUM_THREADS": "1",
           "MKL_NUM_THREADS": "1", "PYTHONDONTWRITEBYTECODE": "1"}
    data = shared_data()
    if data is not None:
        env.setdefault("UNLEARNKIT_SHARED_DATA", data)
    cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", f"--junitxml={junit}", *extra, *tests]
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=copy, env=env, capture_output=True, text=True, timeout=timeout)
        rc: int | str = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    skipped = set()
    if junit.is_file():
        for tc in ET.parse(junit).getroot().iter("testcase"):
            if tc.find("skipped") is not None:
                skipped.add(f"{tc.get('classname')}::{tc.get('name')}")
        junit.unlink()
    return rc, skipped, time.perf_counter() - t0


def apply(copy: Path, m: Mutation) -> dict[Path, str]:
    """Apply ``m``'s edits in ``copy``; returns the original texts. Raises LookupError on a stale snippet."""
    saved: dict[Path, str] = {}
    for rel, old, new in m.edits:
        path = copy / rel
        text = saved.get(path) or path.read_text(encoding="utf-8")
        saved.setdefault(path, text)
        current = path.read_text(encoding="utf-8")
        n = current.count(old)
        if n != 1:
            raise LookupError(f"{rel}: snippet found {n} times: {old[:70]!r}")
        path.write_text(current.replace(old, new), encoding="utf-8")
    return saved


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="*", help="mutation ids to run (default: all fast ones)")
    ap.add_argument("--slow", action="store_true", help="include mutations whose tests are marked slow")
    ap.add_argument("--list", action="store_true", help="list the mutations and exit")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per pytest run")
    ap.add_argument("--out", default="benchmarks/results/mutation_check.md")
    args = ap.parse_args()
    chosen = [m for m in MUTATIONS if (args.only and m.id in args.only) or (not args.only and (args.slow or not m.slow))]
    if args.list:
        for m in MUTATIONS:
            print(f"{m.id:34s} {'(slow) ' if m.slow else ''}{m.what}")
        return 0
    if args.only and len(chosen) != len(set(args.only)):
        print(f"unknown mutation id(s): {sorted(set(args.only) - {m.id for m in chosen})}", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="unlearnkit-mutation-") as tmp:
        copy = Path(tmp) / "repo"
        copy.mkdir()
        copy_checkout(copy)
        probe = subprocess.run([sys.executable, "-c", "import unlearnkit; print(unlearnkit.__file__)"], cwd=copy,
                               env={**os.environ, "PYTHONPATH": str(copy / "src")}, capture_output=True, text=True)
        if not probe.stdout.strip().startswith(str(copy)):
            print(f"the copy's sources are not the ones imported ({probe.stdout.strip() or probe.stderr[-300:]})",
                  file=sys.stderr)
            return 2
        # baseline: every selected test passes on the unmutated copy
        groups = sorted({(m.tests, m.extra) for m in chosen})
        baseline_skips: dict[tuple, set[str]] = {}
        for tests, extra in groups:
            rc, skipped, sec = run_pytest(copy, tests, extra, args.timeout, Path(tmp) / "junit.xml")
            print(f"baseline {' '.join(tests)[:90]}: exit {rc} ({sec:.0f} s)"
                  + (f"; skipped: {', '.join(sorted(skipped))}" if skipped else ""), flush=True)
            if rc != 0:
                print("the unmutated tests fail: fix them before checking mutations", file=sys.stderr)
                return 2
            baseline_skips[(tests, extra)] = skipped
        results = []
        for m in chosen:
            try:
                saved = apply(copy, m)
            except LookupError as err:
                results.append((m, "stale", str(err), 0.0))
                print(f"{m.id}: STALE ({err})", flush=True)
                continue
            try:
                rc, skipped, sec = run_pytest(copy, m.tests, m.extra, args.timeout, Path(tmp) / "junit.xml")
            finally:
                for path, text in saved.items():
                    path.write_text(text, encoding="utf-8")
            new_skips = skipped - baseline_skips[(m.tests, m.extra)]
            if rc == 1:
                verdict, how = "caught", "a test failed"
            elif rc == 0 and new_skips:
                verdict, how = "caught", f"test(s) now skip (CI skip check): {', '.join(sorted(new_skips))[:120]}"
            elif rc == 0:
                verdict, how = "MISSED", "every test passed"
            else:
                verdict, how = "error", f"pytest exit {rc}"
            results.append((m, verdict, how, sec))
            print(f"{m.id}: {verdict} ({how}; {sec:.0f} s)", flush=True)
    caught = sum(v == "caught" for _, v, _, _ in results)
    lines = [f"# Mutation check ({time.strftime('%Y-%m-%d')}; {platform.machine()}, Python {platform.python_version()})",
             "", f"`python benchmarks/mutation_check.py{' --slow' if args.slow else ''}`: **{caught}/{len(results)} "
             "mutations caught**.", "", "| mutation | the bug | tests run | verdict | how | seconds |",
             "| --- | --- | --- | --- | --- | ---: |"]
    for m, verdict, how, sec in results:
        tests = "<br>".join(t.replace("tests/", "") for t in m.tests)
        lines.append(f"| `{m.id}` | {m.what} | {tests} | {verdict} | {how} | {sec:.0f} |")
    text = "\n".join(lines) + "\n"
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text, encoding="utf-8")
    print(text)
    return 0 if caught == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
