"""The LLM loop on Hugging Face accelerate: mixed precision (bf16 on the CPU; fp16 refused there), bf16 weights,
sharding settings (FSDP2 / DeepSpeed plugins: parsed, validated, refused where they cannot run) and the sharded
window's normalisation (checked on the CPU by simulating the ranks one after another).

Tolerances (bf16 autocast vs fp32, same seeds; measured on this CPU: loss 7e-5 relative, forget log-prob per token
0.002 nats for θ_o and 0.002 / 0.007 for GA / NPO): per-epoch loss within 1e-3 relative, per-token forget
log-probability within 0.02 nats (θ_o) and 0.05 nats on average (GA, NPO), while unlearning moves it by > 1 nat.
"""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")
pytest.importorskip("accelerate")

from core_fixtures import engine, state, task, tiny_model, tokenizer, trained_model  # noqa: E402
from unlearnkit.errors import ConfigError  # noqa: E402
from unlearnkit.llm.lm import LMTrainConfig, answer_logprobs, train_lm  # noqa: E402
from unlearnkit.methods import METHODS  # noqa: E402
from unlearnkit.methods.llm import LLMContext  # noqa: E402

RECIPE = {"epochs": 6, "batch_size": 16, "grad_accum": 1, "lr": 5e-3, "max_len": 64}


def _train(mixed_precision: str, dtype: str = "float32"):
    """θ_o on the synthetic D; records (training flag, output dtype) of one Linear layer's forwards."""
    model = tiny_model(0, dtype=dtype)
    seen: set[tuple[bool, torch.dtype]] = set()
    h = model.model.layers[0].mlp.down_proj.register_forward_hook(lambda m, i, o: seen.add((m.training, o.dtype)))
    fit = train_lm(model, tokenizer(), task().full, LMTrainConfig(**RECIPE, mixed_precision=mixed_precision),
                   engine(), seed=0)
    h.remove()
    s, n = answer_logprobs(model, tokenizer(), task().forget.pairs())
    return model, fit, s / n, seen


def test_bf16_autocast_trains_theta_o_close_to_fp32():
    _, f32, lp32, seen32 = _train("no")
    model, b16, lp16, seen16 = _train("bf16")
    assert seen32 == {(True, torch.float32)}
    assert seen16 == {(True, torch.bfloat16)}  # autocast active in every training forward
    assert {p.dtype for p in model.parameters()} == {torch.float32}  # weights (and optimizer state) stay fp32
    assert b16.mixed_precision == "bf16" and f32.mixed_precision == "no"
    assert all(np.isfinite(b16.step_losses))
    assert b16.losses != f32.losses  # bf16 really computed something else ...
    np.testing.assert_allclose(b16.losses, f32.losses, rtol=1e-3)  # ... within the stated tolerance
    assert b16.losses[-1] < b16.losses[0] - 1.0  # and it learned
    assert np.abs(lp16 - lp32).max() < 0.02


@pytest.mark.parametrize("name", ["ga", "npo"])
def test_bf16_unlearning_close_to_fp32(name):
    theta = trained_model()
    tok, t = tokenizer(), task()
    s0, n0 = answer_logprobs(theta, tok, t.forget.pairs())
    out = {}
    for mp in ("no", "bf16"):
        model = copy.deepcopy(theta)
        seen: set[torch.dtype] = set()
        h = model.model.layers[1].self_attn.q_proj.register_forward_hook(
            lambda m, i, o, seen=seen: seen.add(o.dtype) if m.training else None)
        res = METHODS.build(name, {"epochs": 3, "batch_size": 4, "grad_accum": 1, "lr": 1e-3,
                                   "mixed_precision": mp}).unlearn(
            model, t.forget, t.retain, engine(), LLMContext(seed=0, tokenizer=tok, fmt="qa", max_len=64))
        h.remove()
        assert res.notes["mixed_precision"] == mp
        assert seen == {torch.bfloat16 if mp == "bf16" else torch.float32}
        assert all(np.isfinite(res.notes["step_losses"]))
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        s, n = answer_logprobs(model, tok, t.forget.pairs())
        out[mp] = s / n
    drop = (s0 / n0).mean() - out["bf16"].mean()
    assert drop > 1.0  # unlearning lowered p(forget answers) by more than one nat per token
    assert np.abs(out["bf16"] - out["no"]).mean() < 0.05
    assert not np.array_equal(out["bf16"], out["no"])


def test_bf16_weights_train_on_cpu():
    """Model dtype bfloat16 (no autocast): weights stay bf16, losses finite and falling, close to fp32's start."""
    model, fit, lp, seen = _train("no", dtype="bfloat16")
    _, f32, _, _ = _train("no")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert seen == {(True, torch.bfloat16)}
    assert all(np.isfinite(fit.step_losses)) and np.isfinite(lp).all()
    assert fit.losses[-1] < fit.losses[0] - 1.0
    assert abs(fit.losses[0] - f32.losses[0]) < 0.05 * f32.losses[0]


def test_fp16_on_cpu_is_a_config_error_before_any_update():
    model = tiny_model(0)
    before = state(model)
    with pytest.raises(ConfigError, match="fp16 cannot run on a CPU"):
        train_lm(model, tokenizer(), task().full, LMTrainConfig(**RECIPE, mixed_precision="fp16"), engine(), seed=0)
    assert all(torch.equal(v, state(model)[k]) for k, v in before.items())
    from unlearnkit.models.llm import check_dtype_on_device

    with pytest.raises(ConfigError, match="float16 cannot train on a CPU"):
        check_dtype_on_device("float16", "cpu")
    check_dtype_on_device("bfloat16", "cpu")


TINY = {
    "data": {"source": "synthetic", "n_persons": 10, "qa_per_person": 10, "forget_split": "forget10"},
    "model": {"kind": "tiny", "vocab_size": 384, "hidden_size": 32, "layers": 2, "heads": 2, "max_len": 96},
    "train": {"epochs": 2, "batch_size": 8, "grad_accum": 1, "lr": 5e-3},
    "eval": {"max_items": 4, "max_new_tokens": 4, "batch_size": 16},
}


def _cfg(tmp_path, llm_changes: dict, method_params: dict):
    from unlearnkit.bench import experiment as ExperimentConfig

    llm = {k: {**v, **llm_changes.get(k, {})} for k, v in TINY.items()}
    return ExperimentConfig(name="acc", track="llm", llm=llm, seeds=[0], output_dir=str(tmp_path / "runs"),
                            engine={"progress": False, "threads": 1},
                            methods=[{"name": "ga", "params": {"epochs": 1, "batch_size": 4, **method_params}}])


@pytest.mark.parametrize("llm_changes, method_params, match", [
    ({"model": {"dtype": "float16"}}, {}, "float16 cannot train on a CPU"),
    ({}, {"mixed_precision": "fp16"}, "fp16 cannot run on a CPU"),
    ({"train": {"mixed_precision": "fp16"}}, {}, "fp16 cannot run on a CPU"),
    ({}, {"sharding": {"fsdp": {"fsdp_version": 2}}}, "fsdp sharding needs CUDA GPUs"),
])
def test_the_runner_refuses_what_the_cpu_cannot_run_before_any_training(tmp_path, monkeypatch, llm_changes,
                                                                        method_params, match):
    from unlearnkit.bench import run_experiment
    from unlearnkit.llm import lm

    def no_training(*a, **k):
        raise AssertionError("training started before the check")

    monkeypatch.setattr(lm, "optimize", no_training)
    with pytest.raises(ConfigError, match=match):
        run_experiment(_cfg(tmp_path, llm_changes, method_params), write_report=False)


# -- sharding settings ------------------------------------------------------------------------------------------------
def test_sharding_dicts_are_validated_when_the_config_is_read():
    from pydantic import ValidationError

    from unlearnkit.methods.llm.base import LLMOptimConfig

    ok = LMTrainConfig(sharding={"fsdp": {"fsdp_version": 2, "reshard_after_forward": True}})
    assert ok.sharding["fsdp"]["fsdp_version"] == 2
    assert LLMOptimConfig(sharding={"deepspeed": {"zero_stage": 3}}).recipe(64).sharding == {
        "deepspeed": {"zero_stage": 3}}
    for bad, match in [({"fsdp": {}}, "fsdp_version: 2"), ({"fsdp": {"fsdp_version": 2, "shard_everything": 1}},
                                                           r"unknown fsdp field\(s\) \['shard_everything'\]"),
                       ({"deepspeed": {"stage": 2}}, "zero_stage"), ({"ddp": {}}, "exactly one of"),
                       ("/no/such/accelerate.yaml", "does not exist")]:
        with pytest.raises(ValidationError, match=match):
            LMTrainConfig(sharding=bad)


def test_sharding_from_an_accelerate_config_file(tmp_path):
    import yaml

    from unlearnkit.engine.distributed import check_accelerate, load_sharding

    f = tmp_path / "fsdp.yaml"
    f.write_text(yaml.safe_dump({"compute_environment": "LOCAL_MACHINE", "distributed_type": "FSDP",
                                 "mixed_precision": "bf16", "num_processes": 8,
                                 "fsdp_config": {"fsdp_version": 2, "fsdp_reshard_after_forward": True,
                                                 "fsdp_transformer_layer_cls_to_wrap": "LlamaDecoderLayer",
                                                 "fsdp_offload_params": False}}))
    kind, kw, mp = load_sharding(str(f))
    assert (kind, mp) == ("fsdp", "bf16")
    assert kw == {"fsdp_version": 2, "reshard_after_forward": True,
                  "transformer_cls_names_to_wrap": "LlamaDecoderLayer", "cpu_offload": False}
    # validation only (no GPU needed): what a GPU launch would accept or refuse
    assert check_accelerate("bf16", str(f), device="cuda", world_size=2)[0] == "fsdp"
    with pytest.raises(ConfigError, match="sets mixed_precision 'bf16' but the recipe's mixed_precision is 'no'"):
        check_accelerate("no", str(f), device="cuda", world_size=2)
    with pytest.raises(ConfigError, match="this run has one"):
        check_accelerate("bf16", str(f), device="cuda", world_size=1)
    with pytest.raises(ConfigError, match="needs CUDA GPUs"):
        check_accelerate("bf16", str(f), device="cpu", world_size=2)
    ds = tmp_path / "ds.yaml"
    ds.write_text(yaml.safe_dump({"distributed_type": "DEEPSPEED", "deepspeed_config": {
        "zero_stage": 2, "offload_optimizer_device": "none", "deepspeed_multinode_launcher": "standard"}}))
    assert load_sharding(str(ds)) == ("deepspeed", {"zero_stage": 2, "offload_optimizer_device": "none"}, None)
    import importlib.util

    if importlib.util.find_spec("deepspeed") is None:
        with pytest.raises(ConfigError, match="pip install deepspeed"):
            check_accelerate("no", str(ds), device="cuda", world_size=2)
    other = tmp_path / "ddp.yaml"
    other.write_text(yaml.safe_dump({"distributed_type": "MULTI_GPU"}))
    with pytest.raises(ConfigError, match="sharding needs FSDP or DEEPSPEED"):
        load_sharding(str(other))


def test_launch_settings_must_match_the_recipe(monkeypatch):
    from unlearnkit.engine.distributed import check_accelerate

    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "bf16")
    with pytest.raises(ConfigError, match="--mixed_precision bf16 but the recipe's mixed_precision is 'no'"):
        check_accelerate("no", None, device="cpu")
    assert check_accelerate("bf16", None, device="cpu") is None
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    with pytest.raises(ConfigError, match="--use_fsdp but the recipe has no fsdp sharding"):
        check_accelerate("no", None, device="cpu")


def test_precision_changes_between_runs_of_one_process():
    """accelerate's process-wide state refuses a second precision; each training run resets it (fp32, bf16, fp32)."""
    losses = []
    for mp in ("no", "bf16", "no"):
        fit = train_lm(tiny_model(0), tokenizer(), task().forget, LMTrainConfig(
            epochs=1, batch_size=5, grad_accum=2, lr=1e-3, max_len=64, mixed_precision=mp), engine(), seed=0)
        assert fit.mixed_precision == mp and fit.steps == 1
        losses.append(fit.losses)
    assert losses[0] == losses[2] != losses[1]  # fp32 again after bf16: bitwise the first run


# -- the sharded window (FSDP2 / DeepSpeed), simulated rank by rank on the CPU --------------------------------------
def test_rank_micro_batches_pad_every_rank_to_rank_0s_count():
    from unlearnkit.llm.lm import rank_micro_batches

    gpos = np.array([7, 3, 9, 1, 4])
    r0 = rank_micro_batches(gpos, 0, 2, 2, pad=True)
    r1 = rank_micro_batches(gpos, 1, 2, 2, pad=True)
    assert [x.tolist() for x in r0] == [[7, 9], [4]] and [x.tolist() for x in r1] == [[3, 1], []]
    assert [x.tolist() for x in rank_micro_batches(gpos, 1, 2, 2)] == [[3, 1]]
    one = rank_micro_batches(np.array([5]), 1, 2, 4, pad=True)  # fewer examples than ranks
    assert len(one) == 1 and one[0].size == 0
    for world in (1, 2, 3, 8):
        parts = [rank_micro_batches(np.arange(11), r, world, 3, pad=True) for r in range(world)]
        assert len({len(p) for p in parts}) == 1
        assert sorted(np.concatenate([x for p in parts for x in p]).tolist()) == list(range(11))


@pytest.mark.parametrize("count", [5, 1])
def test_sharded_window_average_over_ranks_is_the_global_window_mean(count):
    """An engine that averages gradients over 2 ranks (FSDP2, DeepSpeed) gets, with the loss scaled by
    world / |window|, the gradient of the one-process window; a rank without examples contributes exactly 0."""
    from unlearnkit.engine.distributed import DistState, make_accelerator
    from unlearnkit.llm.lm import _sharded_window, _window, encode_pairs, mean_token_nll
    from unlearnkit.llm.tokenize import collate

    tok = tokenizer()
    enc = encode_pairs(tok, task().forget.pairs()[:count], max_len=64)

    def micro(m, pos, gpos, epoch):
        return mean_token_nll(m, collate([enc[i] for i in pos], tok.pad_token_id)).sum()

    model = tiny_model(2)
    params = [p for p in model.parameters()]
    acc = make_accelerator("no", None, device=torch.device("cpu"))
    order, gpos = np.arange(count), np.arange(count)

    def grads(run):
        for p in params:
            p.grad = None
        total = run()
        return total, [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    one_loss, one = grads(lambda: _window(acc, model, micro, order, gpos, 0, 0, 1, 2, engine(), 0, "t", DistState(),
                                          params))
    per_rank = [grads(lambda r=r: _sharded_window(acc, model, model, micro, order, gpos, 0, r, 2, 2, engine(), 0,
                                                  "t", "fsdp")) for r in range(2)]
    for k, g in enumerate(one):
        avg = (per_rank[0][1][k] + per_rank[1][1][k]) / 2
        assert torch.allclose(avg, g, atol=1e-7, rtol=1e-5)
    if count == 1:
        assert all(not torch.any(g != 0) for g in per_rank[1][1])  # the zero-weighted stand-in micro-batch
    assert per_rank[0][0] + per_rank[1][0] == pytest.approx(one_loss, rel=1e-6)


def test_gather_into_copies_every_tensor_by_name():
    from unlearnkit.engine.distributed import make_accelerator
    from unlearnkit.llm.lm import _gather_into

    trained, plain = tiny_model(4), tiny_model(5)
    _gather_into(make_accelerator("no", None, device=torch.device("cpu")), trained, plain, rank=0)
    assert all(torch.equal(v, trained.state_dict()[k]) for k, v in plain.state_dict().items())


def test_llm_track_trains_and_unlearns_in_bf16_close_to_fp32(tmp_path, monkeypatch):
    """The runner on the tiny Llama: θ_o, θ_r, GA and NPO all train under bf16 autocast (every Accelerator the loop
    builds is bf16), every row is ok, and the probability / truth-ratio metrics stay within 0.01 / 0.02 of the fp32
    run (measured: ≤ 0.001 / 0.004)."""
    from unlearnkit.bench import run_experiment
    from unlearnkit.bench import experiment as ExperimentConfig
    from unlearnkit.llm import lm

    built: list[str] = []
    real = lm.make_accelerator

    def recording(mixed_precision="no", *a, **k):
        built.append(mixed_precision)
        return real(mixed_precision, *a, **k)

    monkeypatch.setattr(lm, "make_accelerator", recording)
    rows = {}
    for mp in ("no", "bf16"):
        llm = {k: dict(v) for k, v in TINY.items()}
        llm["train"].update(epochs=6, mixed_precision=mp)
        llm["eval"].update(max_items=8, max_new_tokens=6)
        cfg = ExperimentConfig(
            name=f"acc-{mp}", track="llm", llm=llm, seeds=[0], output_dir=str(tmp_path / mp),
            engine={"progress": False, "threads": 1},
            methods=[{"name": n, "params": {"epochs": 2, "batch_size": 4, "lr": 1e-3, "mixed_precision": mp}}
                     for n in ("ga", "npo")])
        built.clear()
        rows[mp] = {r["method"]: r for r in run_experiment(cfg, write_report=False).rows}
        assert built == [mp] * 4  # θ_o, θ_r, ga, npo
    assert sorted(rows["bf16"]) == ["ga", "npo", "original", "retrain"]
    for method, r in rows["bf16"].items():
        assert r["status"] == "ok", r.get("error")
        if method not in ("retrain", "original"):  # θ_r's / θ_o's rows are the runner's (their recipe: llm.train)
            assert r["notes"]["mixed_precision"] == "bf16"
        a, b = rows["no"][method]["metrics"], r["metrics"]
        for k in ("forget.prob", "retain.prob", "real_authors.prob", "world_facts.prob"):
            assert np.isfinite(b[k]) and abs(a[k] - b[k]) < 0.01, (method, k, a[k], b[k])
        for k in ("forget.truth_ratio", "retain.truth_ratio"):
            assert abs(a[k] - b[k]) < 0.02, (method, k, a[k], b[k])
    assert rows["bf16"]["ga"]["metrics"] != rows["no"]["ga"]["metrics"]  # bf16 did compute differently
