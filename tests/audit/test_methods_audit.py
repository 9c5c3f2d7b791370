"""The robustness methods: UNDIAL / WGA / SatImp losses (goldens, WGA β = 0 is gradient ascent), ROCR's closed form
(goldens; the edit moves the subject towards its target and spares the preserved keys), MRP's projections (folding
is exact; requests accumulate and never undo each other), and every method's declared intent."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from audit_fixtures import cf
from unlearnkit.data.text.qa import QASet
from unlearnkit.errors import MethodError
from unlearnkit.llm.lm import forward_logits, token_logprobs_from_logits
from unlearnkit.llm.tokenize import collate, encode_qa, pad_id_of
from unlearnkit.methods import METHODS
from unlearnkit.methods.llm import LLMContext
from unlearnkit.methods.llm.ga import ga_loss
from unlearnkit.methods.llm.mrp import orthonormal, removed_directions
from unlearnkit.methods.llm.rocr import nullspace_projector, rank_one_update, subject_position
from unlearnkit.methods.llm.satimp import satimp_weight
from unlearnkit.methods.llm.undial import undial_loss, undial_targets
from unlearnkit.methods.llm.wga import weighted_ascent_loss


def _ctx():
    return LLMContext(seed=0, tokenizer=cf.tokenizer(), fmt="qa")


def _batch(n=3):
    tok = cf.tokenizer()
    return collate([encode_qa(tok, it.question, it.answer, "qa") for it in list(cf.task().forget)[:n]],
                   pad_id_of(tok))


def test_undial_targets_and_loss_golden():
    z = torch.tensor([[2.0, 0.0, 0.0]])
    t = undial_targets(z, torch.tensor([0]), beta=2.0)
    assert torch.allclose(t, torch.full((1, 3), 1 / 3))  # the label's logit lowered to the others'
    assert undial_loss(torch.zeros(1, 3), t).item() == pytest.approx(np.log(3))


def test_wga_with_beta_zero_is_gradient_ascent_and_satimp_weights(theta_o):
    b = _batch()
    logp, mask = token_logprobs_from_logits(forward_logits(theta_o, b), b["labels"])
    assert torch.allclose(weighted_ascent_loss(logp, mask, torch.ones_like(logp)), ga_loss(theta_o, b), atol=1e-6)
    w = satimp_weight(torch.tensor([0.5, 0.9]), 2.0, 1.0)
    assert torch.allclose(w, torch.tensor([0.125, 0.081]))


@pytest.mark.parametrize("name", ["undial", "wga", "satimp"])
def test_loss_methods_lower_the_forget_likelihood(name, theta_o):
    task = cf.task()
    before = ga_loss(theta_o, _batch(10)).mean().item()
    m = copy.deepcopy(theta_o)
    METHODS.build(name, {"epochs": 2, "batch_size": 5, "grad_accum": 1, "lr": 5e-3, "retain_loss": "none"}).unlearn(
        m, task.forget, task.retain, cf.engine(), _ctx())
    assert ga_loss(m, _batch(10)).mean().item() < before  # mean log p of D_f answers fell


def test_rocr_closed_form_goldens():
    c = torch.diag(torch.tensor([4.0, 1.0, 1e-4], dtype=torch.float64))
    k0 = torch.linalg.cholesky(c) * np.sqrt(3)  # k0 k0ᵀ / 3 = C
    p, rank = nullspace_projector(k0, 1e-2)
    assert rank == 1 and torch.allclose(p, torch.diag(torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)))
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]], dtype=torch.float64)  # d_ff = 3, N = 2
    resid = torch.tensor([[1.0, -1.0]], dtype=torch.float64)  # d = 1
    full = rank_one_update(keys, resid, torch.eye(3, dtype=torch.float64), 1e-9)
    assert torch.allclose(full @ keys, resid, atol=1e-6)  # unconstrained: writes R exactly
    upd = rank_one_update(keys, resid, p, 1e-3)
    assert torch.allclose(upd @ torch.tensor([[1.0], [1.0], [0.0]], dtype=torch.float64), torch.zeros(1, 1, dtype=torch.float64),
                          atol=1e-12)  # preserved directions untouched


def test_subject_position_finds_the_last_subject_token():
    tok = cf.tokenizer()
    ids, pos = subject_position(tok, "Question: Where was Move Modorab born?\nAnswer:", "Move Modorab")
    assert tok.decode(ids[:pos + 1]).endswith("Move Modorab") and not tok.decode(ids[:pos]).endswith("Modorab")
    assert subject_position(tok, "no name here", "Move Modorab") is None


def test_rocr_redirects_the_subject_and_needs_names(theta_o):
    task = cf.task()
    m = copy.deepcopy(theta_o)
    res = METHODS.build("rocr", {"layers": [0, 1], "l2": 1e-3, "nullspace_threshold": 0.0}).unlearn(
        m, task.forget, task.retain, cf.engine(), _ctx())
    assert res.steps == 0 and res.notes["remaining_fraction"] < 0.5  # most of the way to the unrelated subject
    # untouched: every weight but the edited down-projections
    for k, v in m.state_dict().items():
        if "down_proj" not in k:
            assert torch.equal(v, theta_o.state_dict()[k]), k
    nameless = QASet("forget", [type(it)(it.id, it.question, it.answer, it.paraphrased_answer, it.perturbed_answers,
                                         "author_9") for it in task.forget])
    with pytest.raises(MethodError, match="names its subject"):
        METHODS.build("rocr", {}).unlearn(copy.deepcopy(theta_o), nameless, task.retain, cf.engine(), _ctx())


def test_rocr_takes_subject_names_for_nameless_labels(theta_o):
    """TOFU labels authors author_<k>: with their names as ``subjects`` ROCR makes exactly the edit it makes when the
    labels are the names; names that occur in no question are refused."""
    task = cf.task()
    params = {"layers": [0, 1], "l2": 1e-3, "nullspace_threshold": 0.0}
    names = sorted({str(it.subject) for it in task.forget})
    nameless = QASet("forget", [type(it)(it.id, it.question, it.answer, it.paraphrased_answer, it.perturbed_answers,
                                         f"author_{i % 2}") for i, it in enumerate(task.forget)])
    unrelated = next(str(it.subject) for it in task.retain if str(it.subject) in it.question)
    a, b = copy.deepcopy(theta_o), copy.deepcopy(theta_o)
    METHODS.build("rocr", {**params, "unrelated_subject": unrelated}).unlearn(a, task.forget, task.retain,
                                                                               cf.engine(), _ctx())
    res = METHODS.build("rocr", {**params, "unrelated_subject": unrelated, "subjects": names}).unlearn(
        b, nameless, task.retain, cf.engine(), _ctx())
    assert res.notes["subjects"] == names
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(v, w), k
    with pytest.raises(MethodError, match="occur in none"):
        METHODS.build("rocr", {"subjects": ["Nobody Atall"]}).unlearn(copy.deepcopy(theta_o), nameless, task.retain,
                                                                      cf.engine(), _ctx())


def test_rocr_on_lora_edits_the_base_weight_like_the_merged_model(theta_o):
    """Under peft LoRA (B = 0 at init, so the wrapped model computes θ_o) ROCR writes into each down_proj's frozen
    base weight exactly the edit it makes on the plain model, and leaves the adapters untouched."""
    pytest.importorskip("peft")
    from unlearnkit.models.llm import LoraSpec, apply_lora

    task = cf.task()
    params = {"layers": [0, 1], "l2": 1e-3, "nullspace_threshold": 0.0}
    plain = copy.deepcopy(theta_o)
    METHODS.build("rocr", params).unlearn(plain, task.forget, task.retain, cf.engine(), _ctx())
    wrapped = apply_lora(copy.deepcopy(theta_o), LoraSpec(r=2, alpha=4, dropout=0.0))
    lora_before = {k: v.clone() for k, v in wrapped.state_dict().items() if "lora_" in k}
    METHODS.build("rocr", params).unlearn(wrapped, task.forget, task.retain, cf.engine(), _ctx())
    for i in range(len(plain.model.layers)):
        got = wrapped.get_base_model().model.layers[i].mlp.down_proj.base_layer.weight
        want = plain.model.layers[i].mlp.down_proj.weight
        assert torch.allclose(got, want, atol=1e-6), i
    assert not torch.equal(plain.model.layers[0].mlp.down_proj.weight, theta_o.model.layers[0].mlp.down_proj.weight)
    for k, v in wrapped.state_dict().items():
        if "lora_" in k:
            assert torch.equal(v, lora_before[k]), k


def test_mrp_folding_is_exact_and_requests_accumulate(theta_o):
    task = cf.task()
    a = torch.randn(theta_o.config.hidden_size, 3, generator=torch.Generator().manual_seed(0))
    u = orthonormal(a)
    assert torch.allclose(u.T @ u, torch.eye(3), atol=1e-5)
    hooked, folded = copy.deepcopy(theta_o), copy.deepcopy(theta_o)
    proj = hooked.model.layers[0].mlp.down_proj
    h = proj.register_forward_hook(lambda _m, _i, o: o - (o @ u) @ u.T)
    w = folded.model.layers[0].mlp.down_proj.weight
    with torch.no_grad():
        w.copy_(w - u @ (u.T @ w))
    b = _batch()
    assert torch.allclose(forward_logits(hooked, b), forward_logits(folded, b), atol=1e-4)
    h.remove()
    assert removed_directions(w).shape[1] == 3
    # two requests: removed directions only grow (an earlier projection is never undone)
    m = copy.deepcopy(theta_o)
    f_ids = task.forget.ids
    dims = []
    for part in (f_ids[:5], f_ids[5:]):
        res = METHODS.build("mrp", {"epochs": 1, "batch_size": 5, "grad_accum": 1, "rank": 2, "retain_rank": 2,
                                    "layers": [0]}).unlearn(m, task.forget.select_ids(part), task.retain,
                                                            cf.engine(), _ctx())
        dims.append(res.notes["removed_dims"]["0"])
    assert dims == [2, 4]
    assert all(p.requires_grad for p in m.parameters())  # flags restored
    assert not m.model.layers[0].mlp.down_proj._forward_hooks


def _trained_lora(theta_o, seed: int):
    """θ_o wrapped with rank-2 LoRA adapters whose B is random (non-zero), as after training: the wrapper's delta
    sBA then matters to every edit of the base weights."""
    from unlearnkit.models.llm import LoraSpec, apply_lora

    m = apply_lora(copy.deepcopy(theta_o), LoraSpec(r=2, alpha=4, dropout=0.0))
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, prm in m.named_parameters():
            if "lora_B" in n:
                prm.copy_(torch.randn(prm.shape, generator=g) * 0.5)
    return m


def test_mrp_on_lora_folds_the_projection_into_base_and_adapters(theta_o):
    """Under peft LoRA with trained (non-zero) adapters the projection is folded into the base weight *and* every
    lora_B, so the effective down-projection W + sBA loses exactly ``rank`` output directions; adapters stay
    trainable."""
    pytest.importorskip("peft")
    from unlearnkit.methods.llm.mrp import removed_directions

    task = cf.task()
    m = _trained_lora(theta_o, seed=3)
    down = m.get_base_model().model.layers[0].mlp.down_proj

    def effective():
        return (down.base_layer.weight + down.get_delta_weight("default")).detach()

    assert removed_directions(effective()).shape[1] == 0
    flags = {n: p.requires_grad for n, p in m.named_parameters()}
    res = METHODS.build("mrp", {"epochs": 1, "batch_size": 5, "grad_accum": 1, "rank": 3, "retain_rank": 2,
                                "layers": [0]}).unlearn(m, task.forget, task.retain, cf.engine(), _ctx())
    assert res.notes["removed_dims"]["0"] == 3
    assert removed_directions(effective()).shape[1] == 3  # base alone would leave sBA's directions in
    assert {n: p.requires_grad for n, p in m.named_parameters()} == flags


def test_needle_on_lora_ablates_the_effective_column(theta_o):
    """Under peft LoRA with trained adapters Needle makes the *effective* down-projection column (base + sBA) the
    ablation vector of the effective column; every other effective column is unchanged."""
    pytest.importorskip("peft")
    from unlearnkit.methods.llm.needle import ablation_vector

    task = cf.task()
    m = _trained_lora(theta_o, seed=5)
    blocks = m.get_base_model().model.layers

    def effective(i):
        d = blocks[i].mlp.down_proj
        return (d.base_layer.weight + d.get_delta_weight("default")).detach().clone()

    before = {i: effective(i) for i in range(len(blocks))}
    res = METHODS.build("needle", {"per_concept": 2, "top_k": 10, "seed": 3}).unlearn(m, task.forget, task.retain,
                                                                                     cf.engine(), _ctx())
    hit = {(v["layer"], v["index"]) for v in res.notes["vectors"]}
    assert hit
    for i in range(len(blocks)):
        after = effective(i)
        for j in range(after.shape[1]):
            if (i, j) in hit:
                want = ablation_vector(before[i][:, j].float(), (3, i, j))
                assert torch.allclose(after[:, j], want, atol=1e-5), (i, j)
            else:
                assert torch.allclose(after[:, j], before[i][:, j], atol=1e-6), (i, j)


def test_every_method_declares_an_intent_and_the_cli_shows_it():
    from typer.testing import CliRunner

    from unlearnkit.cli import app

    intents = {n: getattr(METHODS.get(n), "intent", None) for n in METHODS.names()}
    assert set(intents.values()) <= {"removal", "suppression", "none"}
    assert intents["idk_po"] == intents["suppress_tokens"] == intents["dpo"] == "suppression"
    assert intents["ga"] == intents["rocr"] == intents["mrp"] == intents["npo"] == "removal"
    res = CliRunner().invoke(app, ["methods", "--json"])
    assert res.exit_code == 0 and '"intent": "suppression"' in res.output
