"""RWKU utility sets (arXiv:2406.10890 §3): the optional utility / MIA files of RWKU's layout load with the right
counts and a missing field is a clear error; the scores (MMLU accuracy, BBH EM, TruthfulQA MC1/MC2, TriviaQA EM/F1,
fluency entropy) match hand-computed values on a stub scorer with known outputs; the real scorer's option
log-probabilities match an independent forward pass of the tiny model."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from unlearnkit.data.text.rwku import (
    UTILITY_FILES,
    BBHItem,
    MMLUItem,
    TriviaItem,
    TruthfulItem,
    build_rwku_task,
    builtin_utility,
    builtin_utility_rows,
    load_rwku,
    parse_utility_rows,
    synthetic_rwku,
    write_rwku_layout,
    write_rwku_utility,
)
from unlearnkit.errors import DataError
from unlearnkit.metrics.rwku import (
    RWKUUtilityConfig,
    UtilityScorer,
    answer_em,
    answer_f1,
    bbh_prediction,
    mmlu_body,
    ngram_entropy,
    utility_scores,
    word_tokens,
)


def _probe(q, a, level, typ=None):
    d = {"query": q, "answer": a, "level": str(level), "subject": "T"}
    return {**d, "type": typ} if typ else d


def _probes():
    return {"forget_level1": [_probe("T was born in ___.", "Lu", 1)],
            "forget_level2": [_probe("Where was T born?", "Lu", 2)],
            "forget_level3": [_probe("Sure: where was T born?", "Lu", 3, "affirmative suffix")],
            "neighbor_level1": [_probe("N lived in ___.", "Qi", 1)],
            "neighbor_level2": [_probe("Where did N live?", "Qi", 2)]}


def _fixture(root, utility_for_first=True):
    """Two targets; the first with the built-in utility rows plus two MIA files, the second without utility files."""
    first = {**_probes(), **(builtin_utility_rows("Alpha One") if utility_for_first else {})}
    if utility_for_first:
        first["forget_mia"] = [{"text": "Alpha One was born in Lu.", "subject": "Alpha One"},
                               {"text": "Alpha One wrote two books.", "subject": "Alpha One"}]
        first["retain_mia"] = [{"text": "The river flows to the sea.", "subject": "Alpha One"}]
    return write_rwku_layout({"Alpha One": first, "Beta Two": _probes()}, root)


def test_utility_files_load_with_the_right_counts(tmp_path):
    a, b = load_rwku(_fixture(tmp_path))
    assert {k: len(v) for k, v in a.utility.items()} == {"mmlu": 8, "bbh": 6, "truthfulqa": 6, "triviaqa": 8,
                                                        "fluency": 6, "forget_mia": 2, "retain_mia": 1}
    assert b.utility == {}  # a target folder without utility files still loads
    m = a.utility["mmlu"][0]
    assert isinstance(m, MMLUItem) and m.choices == ("Au", "Ag", "Gd", "Go") and m.answer == 0
    assert sorted(x.answer for x in a.utility["mmlu"]) == [0, 0, 1, 1, 2, 2, 3, 3]  # one letter always: chance
    assert m.task == "high_school_chemistry" and len(m.examples) == 2 and m.examples[0].answer == 2
    t = a.utility["truthfulqa"][0]
    assert isinstance(t, TruthfulItem) and t.mc1_labels == (1, 0, 0, 0) and t.mc2_choices == t.mc1_choices
    assert isinstance(a.utility["bbh"][4], BBHItem) and a.utility["bbh"][4].answer == "9"
    assert a.utility["triviaqa"][2] == TriviaItem("Who painted the Mona Lisa?",
                                                  ("Leonardo da Vinci", "Leonardo", "da Vinci"))
    task = build_rwku_task([a, b], n_forget=1)
    assert task.extras["rwku"]["utility_source"] == "files"
    assert task.extras["rwku"]["utility"]["forget_mia"] == ("Alpha One was born in Lu.", "Alpha One wrote two books.")
    # the second target as the forget target has no files: the built-in stand-in (no MIA sets)
    other = build_rwku_task([b, a], n_forget=1)
    assert other.extras["rwku"]["utility_source"] == "builtin" and "forget_mia" not in other.extras["rwku"]["utility"]
    assert build_rwku_task(synthetic_rwku(3), 1).extras["rwku"]["utility_source"] == "builtin"


def test_write_rwku_utility_adds_files_to_existing_targets(tmp_path):
    _fixture(tmp_path, utility_for_first=False)
    written = write_rwku_utility(tmp_path, target="Beta Two")
    assert sorted(p.name for p in written) == sorted(f"{s}.json" for s in builtin_utility_rows())
    a, b = load_rwku(tmp_path)
    assert a.utility == {} and len(b.utility["triviaqa"]) == 8
    with pytest.raises(DataError, match="unknown RWKU utility file 'mmlu'"):
        write_rwku_utility(tmp_path, {"mmlu": []})


@pytest.mark.parametrize("stem,row,field,match", [
    ("retain_mmlu", 2, "choices", r"retain_mmlu\.json lacks field 'choices' in row 2"),
    ("retain_mmlu", 0, "task", r"retain_mmlu\.json lacks field 'task' in row 0"),
    ("retain_bbh", 1, "cot", r"retain_bbh\.json lacks field 'cot' in row 1"),
    ("truthful", 3, "mc1_targets", r"truthful\.json lacks field 'mc1_targets' .*in row 3"),
    ("triviaqa", 4, "answers", r"triviaqa\.json lacks field 'answers' .*in row 4"),
    ("fluency", 0, "instruction", r"fluency\.json lacks field 'instruction' in row 0"),
    ("forget_mia", 1, "text", r"forget_mia\.json lacks field 'text' in row 1"),
])
def test_a_missing_utility_field_is_a_clear_error(tmp_path, stem, row, field, match):
    _fixture(tmp_path)
    path = next((tmp_path / "Target").glob("1_*")) / f"{stem}.json"
    rows = json.loads(path.read_text())
    del rows[row][field]
    path.write_text(json.dumps(rows))
    with pytest.raises(DataError, match=match):
        load_rwku(tmp_path)


def test_bad_utility_values_are_clear_errors():
    base = builtin_utility_rows()
    with pytest.raises(DataError, match=r"'answer' in row 0 must be the index \(0–3\)"):
        parse_utility_rows("retain_mmlu", [{**base["retain_mmlu"][0], "answer": 4}], "x.json")
    bad = {**base["truthful"][0], "mc1_targets": {"choices": ["a", "b"], "labels": [1, 1]}}
    with pytest.raises(DataError, match="at least one true and one false"):
        parse_utility_rows("truthful", [bad], "x.json")
    assert parse_utility_rows("retain_mmlu", [{**base["retain_mmlu"][0], "answer": "C"}])[0].answer == 2
    assert set(builtin_utility()) == {UTILITY_FILES[s] for s in base}


# -- scores: golden values ------------------------------------------------------------------------------------------
def test_answer_f1_and_em_goldens():
    assert answer_f1("the Eiffel tower in Paris", ["Eiffel Tower"]) == pytest.approx(2 / 3)  # P 2/4, R 2/2
    assert answer_f1("Paris", ["Eiffel Tower", "Paris, France"]) == pytest.approx(2 / 3)  # best alias: P 1, R 1/2
    assert answer_f1("", [""]) == 1.0 and answer_f1("x", ["y"]) == 0.0
    assert answer_em("The Lion!", ["lion"]) == 1.0 and answer_em("a lion king", ["lion"]) == 0.0
    assert bbh_prediction("2 + 3 = 5. So the answer is 5. Done") == "5"
    assert bbh_prediction("  False  ") == "False" and bbh_prediction("") == "NOANSWER"


def test_fluency_entropy_goldens():
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert ngram_entropy("a b a b") == pytest.approx((2 / 3 * h2 + 4 / 3 * 1.0) / 2)  # 0.972766
    assert ngram_entropy("x y z") == pytest.approx((2 / 3 * 1.0 + 4 / 3 * 0.0) / 2)
    assert ngram_entropy("word") == 0.0 and ngram_entropy("") == 0.0
    assert ngram_entropy("the cat the cat the cat") < ngram_entropy("the cat sat on a warm mat")
    assert word_tokens("It isn't 3.5, is it?") == ["It", "is", "n't", "3.5", ",", "is", "it", "?"]


class StubScorer(UtilityScorer):
    """Known option log-probabilities and generations per set; records the prompts it was given."""

    def __init__(self, lps, gens):
        self.lps, self.gens, self.prompts = lps, gens, {}

    def finish(self, body, cue):
        return body + "\n" + cue

    def completion_logprobs(self, prompts, completions, tag):
        self.prompts[tag[0]] = (prompts, completions)
        return [np.asarray(r, dtype=np.float64) for r in self.lps[tag[0]]]

    def generate(self, prompts, max_new_tokens, tag):
        self.prompts[tag[0]] = (prompts, max_new_tokens)
        return list(self.gens[tag[0]])


def _util():
    ex = (MMLUItem("1+1?", ("1", "2"), 1, "math"),)
    mmlu = tuple(MMLUItem(f"q{i}", ("a", "b", "c", "d"), i, "college_math", ex) for i in range(3))
    tru = (TruthfulItem("t0", ("T", "F1", "F2"), (1, 0, 0), ("T", "T2", "F1"), (1, 1, 0)),
           TruthfulItem("t1", ("T", "F1"), (1, 0)))
    return {"mmlu": mmlu, "truthfulqa": tru,
            "bbh": (BBHItem("b0", "True", "cot"), BBHItem("b1", "(A)", "cot"), BBHItem("b2", "11", "cot")),
            "triviaqa": (TriviaItem("v0", ("Leonardo da Vinci", "da Vinci")), TriviaItem("v1", ("Tokyo",))),
            "fluency": ("write", "tell")}


def test_utility_scores_on_a_stub_scorer_match_hand_values():
    lps = {"mmlu": [[-1.0, -2.0, -3.0, -4.0], [-5.0, -0.5, -2.0, -9.0], [-1.0, -2.0, -3.0, -0.1]],  # argmax 0, 1, 3
           # union order: t0 → T, F1, F2, T2 ; t1 → T, F1
           "truthfulqa": [[-1.0, -2.0, -0.5, -1.5], [-3.0, -1.0]]}
    gens = {"bbh": ["so the answer is True.", "The answer is (A). ok", "I think 12"],
            "triviaqa": ["Da Vinci painted it\nQ: next question", "tokyo"],
            "fluency": ["a b a b", "x y z"]}
    s = StubScorer(lps, gens)
    out = utility_scores(_util(), s, RWKUUtilityConfig(sets=["mmlu", "bbh", "truthfulqa", "triviaqa", "fluency"]))
    v = out.values
    assert v["rwku_utility.mmlu.acc"] == pytest.approx(2 / 3) and v["rwku_utility.mmlu.n"] == 3
    assert v["rwku_utility.bbh.em"] == pytest.approx(2 / 3)
    # MC1: t0 true −1.0 vs max false (−2.0, −0.5) = −0.5 → 0; t1 −3 vs −1 → 0
    assert v["rwku_utility.truthfulqa.mc1"] == 0.0
    # MC2 only where every item has MC2 options: t1 has none → not reported
    assert "rwku_utility.truthfulqa.mc2" not in v
    # TriviaQA on the first line: "Da Vinci painted it" vs "da Vinci": P 2/4, R 1 → 2/3; EM 0; "tokyo": 1, 1
    assert v["rwku_utility.triviaqa.f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert v["rwku_utility.triviaqa.em"] == pytest.approx(0.5)
    h2 = -(2 / 3 * math.log2(2 / 3) + 1 / 3 * math.log2(1 / 3))
    assert v["rwku_utility.fluency.entropy"] == pytest.approx(((2 / 3 * h2 + 4 / 3) / 2 + 1 / 3) / 2)
    prompts, comps = s.prompts["mmlu"]
    assert comps[0] == [" A", " B", " C", " D"] and prompts[0].endswith("D. d\nAnswer:")
    assert out.per_sample["rwku_utility.mmlu.pred"].tolist() == [0, 1, 3]
    assert prompts[0].startswith("The following are multiple choice questions (with answers) about college math.")
    assert "Question: 1+1?\nA. 1\nB. 2\nAnswer: B\n\n" in prompts[0]
    assert s.prompts["truthfulqa"][1][0] == [" T", " F1", " F2", " T2"]


def test_truthfulqa_mc2_share_and_mc1_win():
    util = {"truthfulqa": (TruthfulItem("t", ("T", "F"), (1, 0), ("T", "T2", "F"), (1, 1, 0)),)}
    s = StubScorer({"truthfulqa": [[math.log(0.5), math.log(0.1), math.log(0.3)]]}, {})  # T, F, T2
    v = utility_scores(util, s, RWKUUtilityConfig(sets=["truthfulqa"])).values
    assert v["rwku_utility.truthfulqa.mc1"] == 1.0
    assert v["rwku_utility.truthfulqa.mc2"] == pytest.approx((0.5 + 0.3) / 0.9)


def test_first_line_off_scores_the_whole_answer():
    util = {"triviaqa": (TriviaItem("v", ("Tokyo",)),)}
    s = StubScorer({}, {"triviaqa": ["Tokyo\nQ: x"]})
    on = utility_scores(util, s, RWKUUtilityConfig(sets=["triviaqa"])).values
    off = utility_scores(util, s, RWKUUtilityConfig(sets=["triviaqa"], first_line=False)).values
    assert on["rwku_utility.triviaqa.em"] == 1.0 and off["rwku_utility.triviaqa.em"] == 0.0
    assert off["rwku_utility.triviaqa.f1"] == pytest.approx(2 * 1 / 3 / (1 + 1 / 3))  # P 1/3, R 1


def test_mmlu_shots_cut_the_examples():
    it = builtin_utility()["mmlu"][0]
    assert mmlu_body(it).count("Answer: ") == 2 and mmlu_body(it, 0).count("Answer: ") == 0
    assert mmlu_body(it, 1).count("Answer: ") == 1


# -- the real scorer on the tiny model ------------------------------------------------------------------------------
def _independent_sum_logprob(model, tok, prompt, completion, ml):
    import torch

    pid = tok(prompt, add_special_tokens=True)["input_ids"]
    cid = tok(completion, add_special_tokens=False)["input_ids"]
    seq = (list(pid) + list(cid))[-ml:]
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([seq])).logits[0].double()
    lp = torch.log_softmax(logits, -1)
    n = len(seq)
    return float(sum(lp[n - len(cid) - 1 + j, cid[j]] for j in range(len(cid))))


def test_metric_on_the_tiny_model_matches_an_independent_forward_pass(theta_o):
    from audit_fixtures import cf, make_ctx
    from unlearnkit.metrics import METRICS
    from unlearnkit.metrics.rwku import CtxUtilityScorer

    ctx = make_ctx(theta_o)  # a synthetic (non-RWKU) task: the built-in sets
    params = {"sets": ["mmlu", "truthfulqa", "triviaqa"], "max_items": 3, "shots": 1, "triviaqa_max_new_tokens": 4}
    out = METRICS.build("rwku_utility", params).compute(ctx)
    v = out.values
    assert v["rwku_utility.builtin"] == 1.0 and v["rwku_utility.mmlu.n"] == 3
    assert 0.0 <= v["rwku_utility.truthfulqa.mc1"] <= 1.0 and "rwku_utility.bbh.em" not in v
    sc = CtxUtilityScorer(ctx)
    items = builtin_utility()["mmlu"][:3]
    ml = ctx.max_context
    want = []
    for it in items:
        p = sc.finish(mmlu_body(it, 1), "Answer:")
        row = [_independent_sum_logprob(theta_o, cf.tokenizer(), p, f" {c}", ml) for c in "ABCD"]
        got = sc.completion_logprobs([p], [[" A", " B", " C", " D"]], ("check", it.question))[0]
        np.testing.assert_allclose(got, row, rtol=1e-6, atol=1e-6)
        want.append(int(np.argmax(row)) == it.answer)
    assert v["rwku_utility.mmlu.acc"] == pytest.approx(np.mean(want))


def test_source_task_without_rwku_files_is_an_error(theta_o):
    from audit_fixtures import make_ctx
    from unlearnkit.metrics import METRICS

    with pytest.raises(DataError, match="source: task needs a task built from RWKU files"):
        METRICS.build("rwku_utility", {"source": "task"}).compute(make_ctx(theta_o))


def test_mia_scores_on_a_stub_scorer():
    import zlib
    from types import SimpleNamespace

    texts = {"forget": ("Alpha One was born in Lu.", "Alpha One wrote two books."), "retain": ("The river flows.",)}
    lp = {"forget": [np.array([-1.0, -3.0]), np.array([-2.0, -2.0, -5.0])], "retain": [np.array([-4.0])]}

    class MIAStub(StubScorer):
        def text_scores(self, ts, tag):
            return [SimpleNamespace(logp=x, mu=np.full(len(x), -2.0), sigma=np.ones(len(x))) for x in lp[tag[1]]]

    util = {"forget_mia": texts["forget"], "retain_mia": texts["retain"]}
    v = utility_scores(util, MIAStub({}, {}), RWKUUtilityConfig(sets=["mia"])).values
    assert v["rwku_utility.mia.forget.loss"] == pytest.approx((-2.0 + -3.0) / 2)
    want_z = np.mean([-2.0 / len(zlib.compress(texts["forget"][0].encode())),
                      -3.0 / len(zlib.compress(texts["forget"][1].encode()))])
    assert v["rwku_utility.mia.forget.zlib"] == pytest.approx(want_z)
    # z = (log p − μ) / σ: [1, −1] → lowest 1 of 2 = −1; [0, 0, −3] → lowest 1 of 3 = −3
    assert v["rwku_utility.mia.forget.mink_pp"] == pytest.approx((-1.0 + -3.0) / 2)
    assert v["rwku_utility.mia.retain.loss"] == -4.0 and v["rwku_utility.mia.retain.n"] == 1
    # MIA is not scored where the sets are absent (the built-in stand-in has none)
    assert not any(k.startswith("rwku_utility.mia") for k in utility_scores(
        builtin_utility(), MIAStub({}, {}), RWKUUtilityConfig(sets=["mia"])).values)
