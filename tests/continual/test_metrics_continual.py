"""The continual metric family against values computed by hand: task-incremental masking, per-task accuracy, the
forgotten tasks' accuracy and membership AUC, and the summaries (ACC, BWT, forgetting, relapse) over rows."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.data.base import SampleSet
from unlearnkit.data.scenarios import Task
from unlearnkit.errors import ConfigError
from unlearnkit.metrics import METRICS, EvalContext
from unlearnkit.metrics.continual import MASKED_LOGIT, TaskMaskedEvalContext
from unlearnkit.report.figures import cl_summary, op_costs


class Fixed(nn.Module):
    """Returns fixed logits per input: the input is the row index into ``table``."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(table, dtype=torch.float32))

    def forward(self, x):
        return self.table[x.view(-1).long()]


def _set(rows_x, labels, ids, name):
    x = torch.as_tensor(rows_x, dtype=torch.float32).view(-1, 1)
    return SampleSet.from_tensors(x, torch.as_tensor(labels), ids=np.asarray(ids), num_classes=4, name=name)


# 4 classes, 2 tasks: {0, 1} and {2, 3}
GROUPS = [[0, 1], [2, 3]]
# test rows 0-5: labels 0, 1, 2, 3, 2, 3; D_f rows (ids 100+) are task 1's training samples
TABLE = [
    [5, 1, 9, 0],   # test 0, label 0: argmax 2 (wrong); masked to task 1: 0 (right)
    [0, 2, 3, 3],   # test 1, label 1: argmax 2 (wrong); masked: 1 (right)
    [9, 0, 1, 0],   # test 2, label 2: argmax 0 (wrong); masked: 2 (right)
    [0, 0, 4, 1],   # test 3, label 3: 2 (wrong); masked: 2 (wrong)
    [0, 0, 2, 1],   # test 4, label 2: right both ways
    [0, 0, 0, 7],   # test 5, label 3: right both ways
    [3, 1, 0, 0],   # train 6 (D_f, label 0)
    [0, 4, 0, 0],   # train 7 (D_f, label 1)
]


def _task():
    test = _set(range(6), [0, 1, 2, 3, 2, 3], range(6), "test")
    train = _set([6, 7], [0, 1], [100, 101], "train")
    forget = train.take(np.arange(2), "forget")
    retain = train.take(np.zeros(0, dtype=np.int64), "retain")
    rec = {"kind": "continual", "tasks": GROUPS, "classes_learned": [0, 1, 2, 3], "classes_removed": [0, 1],
           "sequence": "L1 L2 U1"}
    return Task("toy", train, forget, retain, test, 4, rec, test.take(np.arange(2), "test_forgotten"))


def test_task_masking_restricts_logits_to_the_sample_task():
    task = _task()
    ctx = TaskMaskedEvalContext(Fixed(TABLE), task, _engine(), groups=GROUPS)
    pred = ctx.predictions("test_all")
    assert pred.correct.tolist() == [True, True, True, False, True, True]
    assert pred.logits[0].tolist() == [5, 1, MASKED_LOGIT, MASKED_LOGIT]
    plain = EvalContext(Fixed(TABLE), task, _engine()).predictions("test_all")
    assert plain.correct.tolist() == [False, False, False, False, True, True]


def _engine():
    from unlearnkit.config.schema import EngineConfig
    from unlearnkit.engine.loop import Engine

    return Engine(EngineConfig(progress=False))


@pytest.mark.parametrize("masked", [False, True])
def test_continual_metric_by_hand(masked):
    task = _task()
    oracle = Fixed([[0, 9, 0, 0]] * 8)  # always class 1
    cls = TaskMaskedEvalContext if masked else EvalContext
    kw = {"groups": GROUPS} if masked else {}
    ctx = cls(Fixed(TABLE), task, _engine(), references={"oracle_model": oracle}, **kw)
    out = METRICS.build("continual").compute(ctx)
    v = out.values
    if masked:
        assert v["acc_task1"] == 100.0 and v["acc_task2"] == 75.0
    else:
        assert v["acc_task1"] == 0.0 and v["acc_task2"] == 50.0
    # task 1 is wholly forgotten, task 2 retained
    assert v["acc_avg"] == v["acc_task2"] and v["acc_forgotten"] == v["acc_task1"]
    assert v["acc_forgotten_oracle"] == 50.0  # class 1 on test rows labelled 0 and 1
    assert v["forgotten_gap"] == abs(v["acc_task1"] - 50.0)
    # membership: −CE of D_f (rows 6, 7) against the test samples of classes {0, 1} (rows 0, 1), AUC by hand
    lp = torch.log_softmax(torch.tensor(TABLE, dtype=torch.float64), 1)
    if masked:
        lp = torch.log_softmax(torch.tensor([r[:2] for r in TABLE], dtype=torch.float64), 1)
    m = [float(lp[6, 0]), float(lp[7, 1])]
    n = [float(lp[0, 0]), float(lp[1, 1])]
    auc = np.mean([(a > b) + 0.5 * (a == b) for a in m for b in n])
    assert v["forgotten_mia_auc"] == pytest.approx(100 * auc)
    assert out.per_sample["test_task"].tolist() == [0, 0, 1, 1, 1, 1]


def test_continual_metric_needs_a_continual_scenario():
    task = _task()
    plain = Task("toy", task.train, task.forget, task.retain, task.test, 4, {"kind": "random"})
    with pytest.raises(ConfigError, match="needs a continual scenario"):
        METRICS.build("continual").compute(EvalContext(Fixed(TABLE), plain, _engine()))


def _row(method, step, accs, role="method", **metrics):
    sc = {"kind": "continual", "sequence": "L1 L2 U1 L3 L4 U2:0.5 U2:0.5", "tasks": [[0, 1], [2, 3], [4, 5], [6, 7]],
          "classes_removed": [0, 1, 2, 3] if step >= 6 else ([0, 1] if step >= 2 else [])}
    m = {f"acc_task{k + 1}": a for k, a in enumerate(accs)}
    m.update(metrics)
    return {"method": method, "seed": 0, "step": step, "dimensions": ["step"], "status": "ok", "role": role,
            "scenario": sc, "metrics": m}


NAN = float("nan")


def test_cl_summary_by_hand():
    # θ_o before the method's first request (steps 0, 1), the method from step 2 on
    rows = [_row("original", 0, [90, NAN, NAN, NAN], "original"), _row("original", 1, [80, 95, NAN, NAN], "original"),
            _row("m", 2, [10, 94, NAN, NAN], unlearn_seconds=0.5),
            _row("m", 3, [30, 90, 97, NAN], learn_seconds=1.5),
            _row("m", 4, [20, 85, 92, 99], learn_seconds=2.0),
            _row("m", 5, [25, 60, 91, 98], unlearn_seconds=0.25),
            _row("m", 6, [35, 40, 88, 97], unlearn_seconds=0.75)]
    s = cl_summary(rows, "m", 0)
    # retained at the end: tasks 3, 4 (task 2 forgotten in two halves, task 1 at step 2)
    assert s["acc"] == pytest.approx((88 + 97) / 2)
    # BWT over retained tasks except the last learned (task 4): task 3: 88 − 97 (its accuracy right after L3)
    assert s["bwt"] == pytest.approx(88 - 97)
    # forgetting: task 3's best earlier accuracy (97 at step 3) − final 88
    assert s["forgetting"] == pytest.approx(97 - 88)
    assert s["acc_forgotten"] == pytest.approx((35 + 40) / 2)
    # relapse: task 1 after U1: 10, 30, 20, 25, 35 → largest rise above the running minimum = 35 − 10 = 25;
    # task 2 after its last share (step 6): no later point
    assert s["relapse"] == pytest.approx(25)
    assert op_costs(rows, "m", 0) == {2: ("U1", 0.5), 3: ("L3", 1.5), 4: ("L4", 2.0), 5: ("U2:0.5", 0.25),
                                      6: ("U2:0.5", 0.75)}


def test_cl_summary_without_the_diagonal_is_nan():
    rows = [_row("m", 2, [10, 94, NAN, NAN]), _row("m", 3, [30, 90, 97, NAN])]
    s = cl_summary(rows, "m", 0)
    assert math.isnan(s["bwt"]) and s["acc"] == pytest.approx((90 + 97) / 2) and s["relapse"] == pytest.approx(20)
    # a task that keeps fading never relapses; one that dips and comes back does, by the rise from its low
    fade = [_row("m", 2, [50, 94, NAN, NAN]), _row("m", 3, [30, 90, 97, NAN]), _row("m", 4, [10, 90, 97, 99])]
    assert cl_summary(fade, "m", 0)["relapse"] == 0.0
    dip = [_row("m", 2, [50, 94, NAN, NAN]), _row("m", 3, [5, 90, 97, NAN]), _row("m", 4, [25, 90, 97, 99])]
    assert cl_summary(dip, "m", 0)["relapse"] == pytest.approx(20)


def test_report_section_draws_matrices_curves_and_summaries():
    from unlearnkit.report.figures import continual_section

    rows = [_row("original", 0, [90, NAN, NAN, NAN], "original"), _row("original", 1, [80, 95, NAN, NAN], "original"),
            _row("m", 2, [10, 94, NAN, NAN], unlearn_seconds=0.5), _row("m", 3, [30, 90, 97, NAN], learn_seconds=1.5)]
    for r in rows:
        r["is_oracle"] = False
    html = continual_section(rows, {})
    assert html.startswith('<section id="continual">')
    assert 'id="continual-matrix-m"' in html and 'id="continual-matrix-original"' in html
    assert 'id="continual-task1"' in html and 'id="continual-task3"' in html and 'id="continual-task4"' not in html
    # the summary row of m: ACC over tasks 2, 3 = 93.5; relapse 20; costs
    assert "<td>m</td><td>93.5 ± 0.0</td>" in html and "<td>20.0 ± 0.0</td>" in html and "<td>0.5</td><td>1.5</td>" in html
    # the heat map cell of m, task 1 at step 2 (10 %), and a dash for a task not learned yet
    assert ">10</text>" in html and ">–</text>" in html
    assert continual_section([{**r, "metrics": {"test_acc": 1.0}} for r in rows], {}) == ""
    assert continual_section([], {}) == ""


def test_failed_rows_are_never_filled_with_theta_o():
    from unlearnkit.report.figures import accuracy_matrix, continual_section

    rows = [_row("original", 0, [90, NAN, NAN, NAN], "original"), _row("original", 1, [80, 95, NAN, NAN], "original"),
            _row("original", 2, [80, 95, NAN, NAN], "original"), _row("original", 3, [70, 90, 97, NAN], "original"),
            _row("m", 2, [10, 94, NAN, NAN]), {**_row("m", 3, [0, 0, 0, 0]), "status": "diverged", "metrics": {}}]
    steps, mat = accuracy_matrix(rows, "m", 0)
    assert steps == [0, 1, 2, 3] and np.isnan(mat[3]).all() and mat[2, 0] == 10 and mat[1, 1] == 95
    assert math.isnan(cl_summary(rows, "m", 0)["acc"])
    for r in rows:
        r["is_oracle"] = False
    assert "m — diverged from step 3 (L3) in 1/1 seeds" in continual_section(rows, {})


def test_a_report_md_carries_the_continual_summaries_of_report_html(tmp_path):
    """report.md used to leave out the continual summary table that report.html shows (ACC, BWT, forgetting,
    forgotten tasks, relapse, costs): both now come from the same summaries."""
    import json

    from unlearnkit.report import write_reports

    rows = [_row("original", 0, [90, NAN, NAN, NAN], "original"), _row("original", 1, [80, 95, NAN, NAN], "original"),
            _row("m", 2, [10, 94, NAN, NAN], unlearn_seconds=0.5), _row("m", 3, [30, 90, 97, NAN], learn_seconds=1.5),
            _row("m|x", 2, [20, 90, NAN, NAN], unlearn_seconds=1.0)]
    for r in rows:
        r["is_oracle"] = False
        r["run"] = "cl"
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    md_path, html_path = write_reports(tmp_path)
    md = md_path.read_text()
    assert "## Continual learning and unlearning" in md
    head = ("| Method | ACC (%) | BWT (pp) | Forgetting (pp) | Forgotten tasks (%) | Relapse (pp) | "
            "Unlearn s / request | Learn s / Learn |")
    assert head in md
    # m: ACC over tasks 2, 3 = 93.5; BWT of task 2: 90 − 95 (θ_o right after L2); forgetting 95 − 90; forgotten
    # task 1 at 30; relapse 30 − 10 = 20; seconds of U1 and L3
    assert "| m | 93.5 ± 0.0 | -5.0 ± 0.0 | 5.0 ± 0.0 | 30.0 ± 0.0 | 20.0 ± 0.0 | 0.5 | 1.5 |" in md
    assert "| m\\|x | 90.0 ± 0.0 |" in md  # a label with a pipe is escaped
    assert "<td>m</td><td>93.5 ± 0.0</td>" in html_path.read_text()  # the same numbers as the HTML table
    # a run that is not a continual schedule gets no such section
    from unlearnkit.report.figures import continual_markdown

    assert continual_markdown([{**r, "metrics": {"test_acc": 1.0}} for r in rows]) == ""
