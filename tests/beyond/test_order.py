"""The training-order experiment (issue 18): one branch per order, oracles on the same multiset of data (one shared
oracle when only the forget stage moves), bad orders refused, the LLM track's learn(), the report's spread."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

pytest.importorskip("transformers")

from unlearnkit.bench.resolve import resolve  # noqa: E402
from unlearnkit.bench.runner import Runner  # noqa: E402
from unlearnkit.data.schedule import Forget, Learn  # noqa: E402
from unlearnkit.data.text.multistage import StagesSpec, build_stage_task, oracle_multisets, order_plan  # noqa: E402
from unlearnkit.errors import ConfigError  # noqa: E402
from unlearnkit.report.order_section import change_table, markdown_section, order_table, spread  # noqa: E402

ORDERS = [["authors", "forget", "instruction", "arithmetic"], ["authors", "instruction", "arithmetic", "forget"],
          ["forget", "authors", "instruction", "arithmetic"], ["arithmetic", "instruction", "authors", "forget"]]
SPEC = StagesSpec(stages=["authors", "instruction", "arithmetic", "forget"], orders=ORDERS, n_persons=6,
                  forget_persons=1, stage_items=8, eval_items=4)


def _plan(spec=SPEC):
    task, stages = build_stage_task(spec, seed=0)
    return task, order_plan(task, stages, spec)


def test_every_order_learns_every_stage_once_and_forgets_the_forget_stage():
    task, plan = _plan()
    assert len(plan) == len(ORDERS)
    for br, order in zip(plan, ORDERS):
        learns = [op for op in br.ops if isinstance(op, Learn)]
        assert [op.name for op in learns] == order
        assert sorted(np.concatenate([op.ids for op in learns]).tolist()) == sorted(task.full.ids.tolist())
        forget = [op for op in br.ops if isinstance(op, Forget)]
        assert len(forget) == 1 and np.array_equal(np.sort(forget[0].ids), np.sort(task.forget.ids))
        assert br.ops[-1].dims == {"order": "-".join(order)}


def test_oracles_are_trained_on_the_same_multiset_of_data():
    task, plan = _plan()
    sets = oracle_multisets(plan)
    assert len(set(sets)) == 1, "every order's oracle must learn the same multiset of samples"
    assert Counter(sets[0]) == Counter(task.retain.ids.tolist())
    # orders that differ only in where the forget stage sits share the oracle's stage sequence (one oracle)
    seqs = [[op.name for op, _ in br.oracle_learning(br.points[-1])] for br in plan]
    assert seqs[0] == seqs[1] == seqs[2] == ["authors", "instruction", "arithmetic"]
    assert seqs[3] == ["arithmetic", "instruction", "authors"]


@pytest.mark.parametrize("orders, match", [
    ([["authors", "instructions", "arithmetic", "forget"]], "unknown stage.*Did you mean 'instruction'"),
    ([["authors", "instruction", "forget"]], "must be a permutation"),
    ([["authors", "instruction", "arithmetic", "forget"]] * 2, "lists an order twice"),
])
def test_bad_orders_are_refused(orders, match):
    with pytest.raises(ConfigError, match=match):
        resolve({"track": "llm", "llm": {"data": {"source": "stages", "stages": {
            "stages": ["authors", "instruction", "arithmetic", "forget"], "orders": orders}}},
            "methods": ["ga"], "metrics": ["tofu"]})


def test_unknown_forget_stage_and_stage_recipes_are_refused():
    with pytest.raises(ValueError, match="forget_stage 'refusals'"):
        StagesSpec(stages=["authors", "forget"], forget_stage="refusals")
    with pytest.raises(ValueError, match="unknown stage"):
        StagesSpec(stage_train={"maths": {"epochs": 3}})
    with pytest.raises(ConfigError, match="stage_train.forget"):
        resolve({"track": "llm", "llm": {"data": {"source": "stages", "stages": {"stage_train": {"forget": {
            "epochs": 0}}}}}, "methods": ["ga"], "metrics": ["tofu"]})


def test_two_orders_end_to_end_share_one_oracle(tmp_path):
    """A tiny run: θ_o per order (shared prefix trained once), one oracle for both orders, rows per order."""
    cfg = resolve({
        "track": "llm", "output_dir": str(tmp_path), "seeds": [0], "metrics": ["stages"],
        "methods": ["retrain", "original", {"name": "ga", "epochs": 1, "batch_size": 4, "grad_accum": 1, "lr": 1e-3}],
        "engine": {"device": "cpu", "threads": 1, "progress": False},
        "llm": {"data": {"source": "stages", "stages": {
            "stages": ["authors", "arithmetic", "forget"], "n_persons": 4, "forget_persons": 1, "stage_items": 6,
            "eval_items": 3, "stage_train": {"authors": {"epochs": 2}, "forget": {"lr": 1e-3, "batch_size": 4}},
            "orders": [["authors", "forget", "arithmetic"], ["authors", "arithmetic", "forget"]]}},
            "model": {"kind": "tiny", "vocab_size": 320, "hidden_size": 16, "layers": 1, "heads": 2, "max_len": 64},
            "train": {"epochs": 1, "batch_size": 16, "grad_accum": 1, "lr": 3e-3, "max_len": 64},
            "eval": {"max_items": 3, "max_new_tokens": 4, "batch_size": 16}}})
    out = Runner(cfg).run()
    # θ_o: authors (shared prefix, once), then forget+arithmetic / arithmetic+forget = 5 Learn trainings;
    # the oracle: authors, arithmetic = 2 (shared by both orders)
    assert Counter(out.trained) == Counter({"original": 5, "oracle": 2})
    orders = {r["order"] for r in out.rows}
    assert orders == {"authors-forget-arithmetic", "authors-arithmetic-forget"}
    oracle_keys = {r["lineage_key"] for r in out.rows if r["role"] == "oracle"}
    assert len(oracle_keys) == 1
    orig_keys = {r["lineage_key"] for r in out.rows if r["role"] == "original"}
    assert len(orig_keys) == 2
    assert all("stage.retained_rouge" in r["metrics"] for r in out.rows if r["status"] == "ok")
    from unlearnkit.report import write_reports

    md, html = write_reports(out.run_dir)
    assert "## Training order" in md.read_text() and 'id="order-spread"' in html.read_text()


def test_order_section_spread_golden():
    def row(method, role, order, fp):
        return {"method": method, "role": role, "seed": 0, "order": order, "dimensions": ["order"], "status": "ok",
                "point": {"a": 0, "b": 1}[order], "metrics": {"forget.prob": fp}}

    rows = [row("retrain", "oracle", "a", 0.1), row("retrain", "oracle", "b", 0.1), row("ga", "method", "a", 0.2),
            row("ga", "method", "b", 0.5), row("original", "original", "a", 0.9), row("original", "original", "b", 0.6)]
    orders, table = order_table(rows)
    assert orders == ["a", "b"]
    assert spread(table["forget.prob"]["ga"]) == pytest.approx(0.3)
    assert spread(table["forget.prob"]["retrain (oracle)"]) == 0.0
    assert change_table(table)["forget.prob"]["ga"] == pytest.approx({"a": -0.7, "b": -0.1})
    md = markdown_section(rows)
    assert "| ga | 0.2 | 0.5 | 0.3 |" in md and "| retrain (oracle) | 0.1 | 0.1 | 0 |" in md
    assert "| ga: change from θ_o | -0.7 | -0.1 | 0.6 |" in md
