"""Real CIFAR-10 (marker ``slow``, about 1–2 minutes on 2 CPU cores): the bundled ``configs/cifar10_random10.yaml`` on
the offline JPEG-zip copy in ``../shared/data/cifar10`` (no torchvision needed: the loader decodes the JPEGs with
Pillow), shrunk to a 2,000-image train subset, 500 test images, 8 epochs and one seed.

What must hold: the small CNN learns (test accuracy far above the 10 % of chance), the oracle's forget accuracy is
about its test accuracy (it never saw D_f), θ_o-derived methods run, and every number in the report comes from the
rows. Run with ``pytest -m slow tests/integration/test_cifar10_real.py``.
"""

from __future__ import annotations

import pytest

from testkit import shared_path

CIFAR_ROOT = shared_path("cifar10")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (CIFAR_ROOT / "cifar10-jpg-train.zip").is_file(),
                       reason="needs the CIFAR-10 JPEG zips in ../shared/data/cifar10"),
]


def test_cifar10_random_forgetting_on_real_images(tmp_path):
    from unlearnkit.bench import run_experiment
    from unlearnkit.bench import load_config

    cfg = load_config("configs/cifar10_random10.yaml", [
        f"data.root={CIFAR_ROOT}", f"output_dir={tmp_path}", "data.train_subset=2000", "data.test_subset=500",
        "train.epochs=8", "seeds=1", "engine.threads=2", "engine.progress=false",
        "methods=[retrain, {name: finetune, epochs: 2, lr: 0.01, batch_size: 128}, "
        "{name: grad_ascent, epochs: 2, lr: 1.0e-4, batch_size: 128}]",
    ])
    out = run_experiment(cfg, write_report=True)
    rows = {r["method"]: r for r in out.rows}
    assert set(rows) == {"retrain", "finetune", "grad_ascent"}
    assert all(r["status"] == "ok" for r in rows.values()), {k: r.get("error") for k, r in rows.items()}
    sc = rows["retrain"]["scenario"]
    assert (sc["n_forget"], sc["n_retain"], sc["n_test"]) == (200, 1800, 500)
    oracle = rows["retrain"]["metrics"]
    assert oracle["test_acc"] > 35.0, oracle  # chance is 10 %
    assert oracle["retain_acc"] > oracle["test_acc"]  # it fits what it trained on
    # θ_r never saw D_f: D_f is unseen data to it, so its accuracy there is close to its test accuracy
    assert abs(oracle["forget_acc"] - oracle["test_acc"]) < 12.0, oracle
    for name in ("finetune", "grad_ascent"):
        m = rows[name]["metrics"]
        assert m["test_acc"] > 30.0 and m["unlearn_acc"] == pytest.approx(100.0 - m["forget_acc"]), (name, m)
    report = (out.run_dir / "report.md").read_text()
    assert f"{oracle['test_acc']:.2f}" in report
