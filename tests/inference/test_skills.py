"""Skill unlearning (arXiv:2503.21730) and the synthetic skills data: Key Space Detection abstains on every forget-skill
prompt it was fit on and on none of a disjoint retain-skill set; Neuron Adjust changes exactly the values the rule
selects, to the rule's value; a skill set with no samples is refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

import world  # noqa: E402
from unlearnkit.data.text.qa import QASet  # noqa: E402
from unlearnkit.data.text.skills import build_skills_task  # noqa: E402
from unlearnkit.errors import ConfigError, MethodError  # noqa: E402
from unlearnkit.llm.lm import generate  # noqa: E402
from unlearnkit.methods import METHODS  # noqa: E402
from unlearnkit.methods.llm.prompt_gate import prompt_ids  # noqa: E402
from unlearnkit.methods.llm.skill_unlearning import ABSTAIN, NeuronAdjustPolicy, ffn_keys, ffn_module  # noqa: E402
from unlearnkit.models.policy import policy_from_saved  # noqa: E402


# -- data ----------------------------------------------------------------------------------------------------------
def test_skills_task_layout():
    t = build_skills_task("arithmetic", n_per_skill=12, n_unseen_per_skill=4, seed=1)
    assert len(t.forget) == 12 and {it.subject.split(":")[0] for it in t.forget} == {"arithmetic"}
    assert set(t.forget.ids).isdisjoint(t.retain.ids)
    assert set(t.full.ids) == set(t.forget.ids) | set(t.retain.ids)
    for s in ("arithmetic", "code", "qa"):
        assert len(t.eval_sets[f"skill:{s}"]) == 12 and len(t.eval_sets[f"unseen:{s}"]) == 4
        assert set(t.eval_sets[f"unseen:{s}"].ids).isdisjoint(t.full.ids)
        assert not set(t.eval_sets[f"unseen:{s}"].questions) & set(t.eval_sets[f"skill:{s}"].questions)
    assert list(t.eval_sets["holdout"].ids) == list(t.eval_sets["unseen:arithmetic"].ids)
    first = [it.subject.split(":")[0] if ":" in it.subject else "qa" for it in t.eval_sets["retain"]][:2]
    assert first == ["code", "qa"]  # interleaved: max_items covers every retained skill
    for it in [*t.forget, *t.retain]:  # every item carries what the TOFU metrics read
        assert len(it.perturbed_answers) == 3
        assert it.paraphrased_answer or it.subject is None  # the utility items (real authors ...) have none
        assert it.answer not in it.perturbed_answers
    a = next(it for it in t.forget if it.subject == "arithmetic:plus")
    x, y = (int(v) for v in a.question[len("What is "):-1].split(" plus "))
    assert a.answer == f"{x} plus {y} is {x + y}."
    assert build_skills_task("arithmetic", n_per_skill=12, n_unseen_per_skill=4, seed=1).full.questions == \
        t.full.questions  # seeded


@pytest.mark.parametrize("kw,msg", [({"n_per_skill": 0}, "every skill needs samples"),
                                    ({"n_unseen_per_skill": 0}, "every skill needs samples"),
                                    ({"skills": ["arithmetic"]}, "at least one to keep"),
                                    ({"skills": ["code", "qa"]}, "not among the skills"),
                                    ({"skills": ["arithmetic", "poetry"]}, "distinct names")])
def test_bad_skill_sets_are_refused(kw, msg):
    with pytest.raises(ConfigError, match=msg):
        build_skills_task("arithmetic", **kw)


def test_track_refuses_an_empty_skill_set():
    from unlearnkit.bench import experiment

    with pytest.raises(ConfigError):
        experiment(name="x", track="llm", llm={"data": {"source": "skills", "n_per_skill": 0}}, methods=["original"])


def test_methods_refuse_a_skill_with_no_samples():
    t = world.task("arithmetic")
    empty = QASet("forget", [], "test")
    ctx = world.context()
    with pytest.raises(MethodError, match="no samples"):
        METHODS.build("key_space_detection", {})._unlearn(world.model(), empty, t.retain, world.engine(), ctx)
    with pytest.raises(MethodError, match="no samples"):
        METHODS.build("neuron_adjust", {})._unlearn(world.model(), t.forget, QASet("retain", [], "t"),
                                                    world.engine(), ctx)


# -- Key Space Detection -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ksd():
    m, res = world.unlearn("key_space_detection", {}, forget_skill="arithmetic")
    return m, res.policy


def test_ksd_abstains_on_every_fit_probe(ksd):
    """By construction (margin ≥ 1): the reference's setting, the last block and margin 2."""
    model, pol = ksd
    fit = list(world.task("arithmetic").forget.questions)
    assert generate(model, world.tokenizer(), fit, "qa", max_new_tokens=8, policy=pol) == [ABSTAIN] * len(fit)


def test_ksd_abstains_on_every_fit_probe_and_no_retain_skill_probe():
    """The minimal covering hypercube (margin 1) of the last block: every fit prompt inside, no prompt of the two
    retained skills inside (with margin 2 this 2-block model lets one of 48 through: the box is loose in 256
    dimensions; the paper's 14,336-dimensional keys make it far tighter)."""
    model, res = world.unlearn("key_space_detection", {"margin": 1.0}, forget_skill="arithmetic")
    pol = res.policy
    t = world.task("arithmetic")
    tok = world.tokenizer()
    fit = list(t.forget.questions)
    out = generate(model, tok, fit, "qa", max_new_tokens=8, policy=pol)
    assert out == [ABSTAIN] * len(fit)
    others = list(t.eval_sets["skill:code"].questions) + list(t.eval_sets["skill:qa"].questions)
    out = generate(model, tok, others, "qa", max_new_tokens=8, policy=pol)
    assert ABSTAIN not in out
    assert out == generate(model, tok, others, "qa", max_new_tokens=8)  # answered as θ_o answers


def test_ksd_hypercube_is_the_minimal_covering_one_times_the_margin(ksd):
    model, pol = ksd
    t = world.task("arithmetic")
    lay = pol.layers[0]
    keys = ffn_keys(model, prompt_ids(world.tokenizer(), list(t.forget.questions), "qa"), [lay])[lay]
    mu, sd = keys.mean(0), keys.std(0)
    kstar = float(((keys - mu).abs() / sd).max())
    assert pol.k_star[str(lay)] == pytest.approx(kstar, rel=1e-9)
    assert torch.allclose(pol.half[lay], torch.maximum(2.0 * kstar * sd, 1e-5 * (mu.abs() + 1)))
    # a margin below 1 could leave fit probes outside: refused by the config
    with pytest.raises(ConfigError):
        METHODS.build("key_space_detection", {"margin": 0.5})


def test_ksd_guard_needs_the_model_and_round_trips(ksd):
    _, pol = ksd
    with pytest.raises(MethodError, match="generate path"):
        pol.guard(["What is 1 plus 1?"])
    back = policy_from_saved("key_space_detection", pol.config(), pol.tensors())
    assert back.config() == pol.config() and torch.equal(back.half[pol.layers[0]], pol.half[pol.layers[0]])


def test_ksd_layer_outside_the_model_is_refused():
    with pytest.raises(MethodError, match="outside the model"):
        world.unlearn("key_space_detection", {"layers": [5]}, forget_skill="arithmetic")


# -- Neuron Adjust -------------------------------------------------------------------------------------------------
def test_adjust_rule_by_hand():
    s = {"mu_r": torch.tensor([0.0, 0.0]), "sd_r": torch.tensor([1.0, 1.0]),
         "mu_f": torch.tensor([4.0, 4.0]), "sd_f": torch.tensor([2.0, 2.0])}
    x = torch.tensor([[0.5, 5.0]])  # 0.5: likelier under retain → kept; 5.0: likelier under forget
    new, changed = NeuronAdjustPolicy.adjust(x, s, torch.tensor([[0.99, 0.99]]))
    # p_r(5)/(p_r+p_f): log p_r = -12.5, log p_f = -0.125 - log 2 → keep prob ≈ 8e-6 < 0.99 → moved:
    # x' = 2·0 − (0 + 1·(5 − 4)/2) = −0.5
    assert changed.tolist() == [[False, True]]
    assert new.tolist() == [[0.5, -0.5]]
    _, changed = NeuronAdjustPolicy.adjust(x, s, torch.tensor([[0.99, 0.0]]))
    assert changed.tolist() == [[False, False]]  # u below the keep probability: left as is


def test_neuron_adjust_changes_exactly_what_the_rule_selects():
    model, res = world.unlearn("neuron_adjust", {"percent": 3.0}, forget_skill="arithmetic")
    pol = res.policy
    assert res.notes["n_selected"] == round(0.03 * res.notes["n_neurons"])
    t = world.task("arithmetic")
    tok = world.tokenizer()
    from unlearnkit.llm.tokenize import collate, encode_qa, pad_id_of

    enc = [encode_qa(tok, it.question, it.answer, "qa", world.MAX_LEN) for it in list(t.forget)[:4]]
    batch = collate(enc, pad_id_of(tok))
    lay = next(iter(pol.stats))
    s = pol.stats[lay]
    mod = ffn_module(model, lay, "gate_proj")
    before, after = [], []
    h1 = mod.register_forward_hook(lambda m, i, o: before.append(o.detach().clone()))
    with pol.forward_hooks(model, tok, batch):
        h2 = mod.register_forward_hook(lambda m, i, o: after.append(o.detach().clone()))
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    h1.remove()
    h2.remove()
    x, y = before[0], after[0]
    others = torch.ones(x.shape[-1], dtype=torch.bool)
    others[s["idx"]] = False
    assert torch.equal(x[..., others], y[..., others])  # unselected neurons untouched
    xs, ys = x[..., s["idx"]], y[..., s["idx"]]
    lp_r = -0.5 * ((xs - s["mu_r"]) / s["sd_r"]) ** 2 - torch.log(s["sd_r"])
    lp_f = -0.5 * ((xs - s["mu_f"]) / s["sd_f"]) ** 2 - torch.log(s["sd_f"])
    moved = ys != xs
    assert not (moved & (lp_r > lp_f)).any()  # values likelier under the retain skill never move
    want = s["mu_r"] - s["sd_r"] * (xs - s["mu_f"]) / s["sd_f"]
    assert torch.allclose(ys[moved], want.expand_as(xs)[moved], atol=1e-5)
    assert moved.any() and pol.last_counts["changed"] > 0
    # the draws are seeded: the same batch gives the same adjusted values
    again = []
    with pol.forward_hooks(model, tok, batch):
        h3 = mod.register_forward_hook(lambda m, i, o: again.append(o.detach().clone()))
        with torch.no_grad():
            model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        h3.remove()
    assert torch.equal(again[0], y)
    back = policy_from_saved("neuron_adjust", pol.config(), pol.tensors())
    assert back.config() == pol.config()
    assert all(torch.equal(back.stats[k]["idx"], v["idx"]) for k, v in pol.stats.items())
    assert np.isfinite(res.notes["threshold_mean_diff"])
