"""O3 on a tiny TOFU-style model: the detector routes a D_f-scope input to the request's adapter and a D_r-scope input
around it (the model then answers exactly as θ_o), one adapter per request kept orthogonal to the earlier ones, the
gate survives the runner's deep copies, and no retain data is read; the detector is trained with the contrastive
entropy loss (its loss falls, it tells the forgotten person from others on unseen question templates, post-hoc leaves
θ_o's features), and it is saved, digested and restored with the model."""

from __future__ import annotations

import copy
import re

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from unlearnkit.bench import Runner, load_config  # noqa: E402
from unlearnkit.data.schedule import Forget  # noqa: E402
from unlearnkit.llm.lm import _to, forward_logits  # noqa: E402
from unlearnkit.llm.tokenize import IGNORE_INDEX, Encoded, collate, encode_prompt, pad_id_of  # noqa: E402
from unlearnkit.methods import METHODS, UnlearnContext  # noqa: E402
from unlearnkit.methods.continual.o3 import GatedLoRALinear, O3Gate, contrastive_entropy, orthogonality  # noqa: E402
from unlearnkit.methods.continual.o3 import restore  # noqa: E402

CFG = {"name": "o3", "track": "llm",
       "llm": {"data": {"source": "synthetic", "forget_split": "forget10", "n_persons": 20, "qa_per_person": 10},
               "model": {"kind": "tiny", "vocab_size": 400, "hidden_size": 32, "layers": 2, "heads": 2,
                         "max_len": 80},
               "scenario": {"kind": "sequential", "requests": 2},
               "train": {"epochs": 6, "batch_size": 16, "grad_accum": 1, "lr": 5e-3, "max_len": 80},
               "eval": {"max_items": 10, "max_new_tokens": 8, "batch_size": 32}},
       "methods": [], "metrics": ["tofu"], "seeds": [0], "engine": {"device": "cpu", "threads": 1, "progress": False}}


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    cfg = load_config(data={**CFG, "output_dir": str(tmp_path_factory.mktemp("o3"))})
    runner = Runner(cfg)
    branch = runner.plan[0]
    forgets = [i for i, op in enumerate(branch.ops) if isinstance(op, Forget)]
    theta = runner.original(0, branch, forgets[0]).model
    return runner, branch, forgets, theta


def _prompts(tok, qs):
    enc = [encode_prompt(tok, q, "qa") for q, _ in qs.pairs()]
    enc = [Encoded(tuple(e), (IGNORE_INDEX,) * len(e), len(e)) for e in enc]
    return _to(collate(enc, pad_id_of(tok), padding_side="left"), torch.device("cpu"))


def _unlearn(runner, model, op, seed, **kw):
    params = {"epochs": 4, "lr": 2e-3, "batch_size": 8, "grad_accum": 1, "detector_epochs": 10, "detector_lr": 5e-3,
              **kw}
    return METHODS.build("o3", params).unlearn(model, op.task.forget, op.task.retain, runner.engine,
                                               runner.track.context(UnlearnContext(seed=seed)))


def test_gate_routes_forget_inputs_to_the_adapter_and_retain_inputs_around_it(setup):
    runner, branch, forgets, theta = setup
    tok = runner.track.tokenizer
    model = copy.deepcopy(theta)
    op = branch.ops[forgets[0]]
    res = _unlearn(runner, model, op, 0)
    assert res.notes["request"] == 1 and res.steps > 0
    gate: O3Gate = model.o3_gate
    f, r = _prompts(tok, op.task.forget), _prompts(tok, op.task.retain.select_ids(op.task.retain.ids[:40]))
    with torch.no_grad():
        wf = gate.detect(model, f["input_ids"], f["attention_mask"])
        wr = gate.detect(model, r["input_ids"], r["attention_mask"])
        # through the model's own forward (the pre-hook sets the gates)
        lf, lf0 = forward_logits(model, f), forward_logits(theta, f)
        lr, lr0 = forward_logits(model, r), forward_logits(theta, r)
    assert wf.shape == (1, len(op.task.forget)) and float(wf.min()) == 1.0  # D_f-scope: the adapter fully loaded
    assert float(wr.max()) == 0.0  # D_r-scope: around it
    # the hook's per-position gate: at the end of each prompt it is the detector's decision on the whole prompt
    assert torch.equal(model.o3_gate.last[:, :, -1], wr)
    assert torch.equal(lr, lr0)  # bit for bit θ_o's answer on D_r
    assert (lf - lf0).abs().max() > 1e-3  # the adapter changes D_f's answers
    # teacher-forced answers other than the trained ones (TOFU's paraphrased / perturbed answers) keep the adapter on
    # their answer tokens: the gate is decided by the question (the prefix), not by the answer's text
    from unlearnkit.llm.lm import encode_pairs

    pairs = [(q, "an entirely different answer about something else") for q, _ in op.task.forget.pairs()]
    batch = _to(collate(encode_pairs(tok, pairs, "qa"), pad_id_of(tok)), torch.device("cpu"))
    with torch.no_grad():
        forward_logits(model, batch)
    last = model.o3_gate.last[0]
    answer = batch["labels"] != IGNORE_INDEX
    assert float(last[answer].min()) == 1.0
    rpairs = [(q, a) for q, a in op.task.retain.pairs()[:20]]
    rb = _to(collate(encode_pairs(tok, rpairs, "qa"), pad_id_of(tok)), torch.device("cpu"))
    with torch.no_grad():
        assert torch.equal(forward_logits(model, rb), forward_logits(theta, rb))
    assert float(model.o3_gate.last.max()) == 0.0
    # no retain item contributed a gradient (O3 reads D_f only)
    assert set(res.seen_ids.tolist()) <= set(op.task.forget.ids.tolist())
    # θ_o's weights stay and the gate decides what is expressed: an inference-time policy, declared as such
    assert METHODS.get("o3").intent == "suppression"


def test_one_orthogonal_adapter_per_request_and_deepcopy_keeps_the_gate(setup):
    runner, branch, forgets, theta = setup
    model = copy.deepcopy(theta)
    _unlearn(runner, model, branch.ops[forgets[0]], 0)
    copied = copy.deepcopy(model)  # the runner copies the previous output before the next request
    assert copied.o3_gate is not model.o3_gate
    assert all(a is b for a, b in zip(copied.o3_gate._layers,
                                      [m for m in copied.modules() if isinstance(m, GatedLoRALinear)]))
    op2 = branch.ops[forgets[1]]
    _unlearn(runner, copied, op2, 1, orth_weight=10.0, lr=1e-2, epochs=10)
    layers = copied.o3_gate._layers
    assert all(len(layer.lora_A) == 2 for layer in layers) and copied.o3_gate.n_requests == 2
    base = copy.deepcopy(model)
    _unlearn(runner, base, op2, 1, orth_weight=0.0, lr=1e-2, epochs=10)
    assert float(orthogonality(layers, 1)) < 0.5 * float(orthogonality(base.o3_gate._layers, 1))
    # the first request's adapter did not move while the second trained
    for a, b in zip(layers, model.o3_gate._layers):
        assert torch.equal(a.lora_A[0], b.lora_A[0]) and torch.equal(a.lora_B[0], b.lora_B[0])
    # each request's inputs go to its own adapter
    tok = runner.track.tokenizer
    p1, p2 = _prompts(tok, branch.ops[forgets[0]].task.forget), _prompts(tok, op2.task.forget)
    g = copied.o3_gate
    with torch.no_grad():
        w1 = g.detect(copied, p1["input_ids"], p1["attention_mask"])
        w2 = g.detect(copied, p2["input_ids"], p2["attention_mask"])
    assert w1[0].min() == 1 and w1[1].max() == 0 and w2[1].min() == 1 and w2[0].max() == 0


def test_generation_keeps_the_gate_of_the_prompt(setup):
    runner, branch, forgets, theta = setup
    from unlearnkit.llm.lm import generate_ids

    model = copy.deepcopy(theta)
    op = branch.ops[forgets[0]]
    _unlearn(runner, model, op, 0)
    tok = runner.track.tokenizer
    qs = [q for q, _ in op.task.retain.pairs()[:4]]
    assert generate_ids(model, tok, qs, max_new_tokens=6) == generate_ids(theta, tok, qs, max_new_tokens=6)
    fq = [q for q, _ in op.task.forget.pairs()[:4]]
    assert generate_ids(model, tok, fq, max_new_tokens=6) != generate_ids(theta, tok, fq, max_new_tokens=6)
    assert float(model.o3_gate.last[:, :, -1].min()) == 1.0  # the cached steps kept the prompt's gate


def _enc_questions(tok, qs):
    enc = [encode_prompt(tok, q, "qa") for q in qs]
    enc = [Encoded(tuple(e), (IGNORE_INDEX,) * len(e), len(e)) for e in enc]
    return _to(collate(enc, pad_id_of(tok), padding_side="left"), torch.device("cpu"))


def _auc(pos, neg):
    """P(a D_f-scope score is below a retain one) (ties half): 0.5 = chance."""
    pos, neg = np.asarray(pos)[:, None], np.asarray(neg)[None]
    return float((pos < neg).mean() + 0.5 * (pos == neg).mean())


def test_contrastive_entropy_golden():
    z1 = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    z2 = torch.tensor([[1.0, 1.0], [0.0, 1.0]])
    s = z1 @ z2.T  # [[1, 0], [2, 2]]
    p0 = torch.softmax(s[0], 0)
    h0 = float(-(p0 * torch.log(p0 + 1e-5)).sum())
    h1 = float(-(0.5 * np.log(0.5 + 1e-5)) * 2)  # equal similarities: the uniform distribution
    got = float(contrastive_entropy([z1, z1], [z2, z2]))
    assert got == pytest.approx(2 * (h0 + h1) / 2, rel=1e-6)


def test_trained_detector_loss_falls_and_tells_the_person_apart_on_unseen_templates(setup):
    runner, branch, forgets, theta = setup
    tok = runner.track.tokenizer
    op = branch.ops[forgets[0]]

    def persons(qs):
        return sorted({m.group(1) for q, _ in qs.pairs() for m in [re.match(r"Where was (.+) born\?", q)] if m})

    fn, rn = persons(op.task.forget), persons(op.task.retain)
    assert len(fn) == 1 and len(rn) >= 10
    templates = ["Tell me about {}.", "What books did {} write?", "Is {} a famous writer?"]  # none in the data
    fq = _enc_questions(tok, [t.format(n) for t in templates for n in fn])
    rq = _enc_questions(tok, [t.format(n) for t in templates for n in rn])
    trained, post = copy.deepcopy(theta), copy.deepcopy(theta)
    res = _unlearn(runner, trained, op, 0)
    _unlearn(runner, post, op, 0, detector="post_hoc")
    losses = res.notes["detector_losses"]
    assert len(losses) == 10 and np.mean(losses[-3:]) < losses[0]  # the CEL + LM objective falls
    assert np.mean(res.notes["detector_cel"][-3:]) < res.notes["detector_cel"][0]
    g = trained.o3_gate
    with torch.no_grad():
        sf = g.scores(trained, fq["input_ids"], fq["attention_mask"])[0]
        sr = g.scores(trained, rq["input_ids"], rq["attention_mask"])[0]
        # post-hoc: the detector adapter stays zero, so its features are θ_o's own, bit for bit
        f = _prompts(tok, op.task.forget)
        h_post = post.o3_gate.features(post, f["input_ids"], f["attention_mask"], 0)
        h_theta = post.o3_gate.features(post, f["input_ids"], f["attention_mask"], None)
        h_tr = g.features(trained, f["input_ids"], f["attention_mask"], 0)
    assert _auc(sf, sr) > 0.6  # the forgotten person's questions look more like D_f than other persons' (chance 0.5)
    assert all(torch.equal(a, b) for a, b in zip(h_post, h_theta))
    assert max(float((a - b).abs().max()) for a, b in zip(h_tr[1:], h_theta[1:])) > 1e-3  # training moved them
    dets = [layer for layer in g._layers if layer.detects]
    assert dets and all(float(layer.det_B[0].abs().max()) > 0 for layer in dets)
    assert all(not layer.det_A for layer in g._layers if not layer.detects)  # only q/k/v carry a detector


def test_detector_is_saved_digested_and_restored_with_the_model(setup, tmp_path):
    from unlearnkit.engine.checkpoint import MODEL_FILE, load_checkpoint, save_checkpoint
    from unlearnkit.errors import CheckpointError, MethodError

    runner, branch, forgets, theta = setup
    tok = runner.track.tokenizer
    model = copy.deepcopy(theta)
    _unlearn(runner, model, branch.ops[forgets[0]], 0)
    _unlearn(runner, model, branch.ops[forgets[1]], 1)
    manifest = save_checkpoint(tmp_path / "ck", model)
    assert MODEL_FILE in manifest["files"]
    state, _, _ = load_checkpoint(tmp_path / "ck")
    assert any(".det_B.1" in key for key in state) and "o3_gate.tau_1" in state and "o3_gate.bank_0" in state
    back = copy.deepcopy(theta)
    restore(back, state)
    assert back.o3_gate.n_requests == 2
    f = _prompts(tok, branch.ops[forgets[1]].task.forget)
    r = _prompts(tok, branch.ops[forgets[0]].task.retain.select_ids(branch.ops[forgets[0]].task.retain.ids[:20]))
    with torch.no_grad():
        for batch in (f, r):
            assert torch.equal(back.o3_gate.detect(back, batch["input_ids"], batch["attention_mask"]),
                               model.o3_gate.detect(model, batch["input_ids"], batch["attention_mask"]))
            assert torch.equal(forward_logits(back, batch), forward_logits(model, batch))
    with pytest.raises(MethodError, match="plain copy"):
        restore(back, state)
    # the digest covers the detector: one flipped byte of the weights file is refused
    path = tmp_path / "ck" / MODEL_FILE
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 1
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "ck")
