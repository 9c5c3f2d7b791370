"""Golden values of SISA's cost model (Bourtoule et al., S&P 2021, arXiv:1912.03817), computed by hand.

Worked example: N = 12, S = 2 shards of 6, R = 3 slices of 2, E = 4 → every step trains ⌊2E(r+1)/(R+1)⌋ − … = 2 epochs.
Deleting one point of slice r (1-based) retrains steps r..3 on prefixes that lost that point:
    slice 1: 2·(1 + 3 + 5) = 18,  slice 2: 2·(3 + 5) = 16,  slice 3: 2·5 = 10  sample-epochs;  mean 44/3.
The formula E·(N/S)·(2R+1)/(3R) = 4·6·7/9 = 168/9 = 18.667 counts prefixes before the deletion (sizes 2, 4, 6):
    2·(2+4+6) = 24, 2·(4+6) = 20, 2·6 = 12, mean 56/3 = 18.667 ✓; the difference, one sample per retrained step,
    is 2·(3+2+1)/3 = 4.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from unlearnkit.config.schema import TrainConfig
from unlearnkit.data.base import SampleSet
from unlearnkit.methods.exact.sisa import SISA, SISAConfig, sisa_expected_cost, slice_epochs


def test_formula_golden_values():
    assert sisa_expected_cost(12, 2, 3, 4) == pytest.approx(168 / 9)
    assert sisa_expected_cost(1000, 1, 1, 1) == pytest.approx(1000.0)  # R = S = 1: full retraining
    assert sisa_expected_cost(1000, 10, 1, 1) == pytest.approx(100.0)
    # R → ∞: (2R+1)/(3R) → 2/3
    assert sisa_expected_cost(3000, 1, 10**6, 1) == pytest.approx(2000.0, rel=1e-5)
    # theoretical speed-up over retraining E·N: S·3R/(2R+1); S = 5, R = 10 → 150/21
    assert 1000 * 3 / sisa_expected_cost(1000, 5, 10, 3) == pytest.approx(150 / 21)


def test_planned_cost_of_every_single_deletion_matches_the_worked_example(tmp_path):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(12, 4, generator=g)
    y = torch.arange(12) % 2
    data = SampleSet.from_tensors(x, y)
    recipe = TrainConfig(epochs=4, batch_size=4, lr=0.05, scheduler="none")
    assert slice_epochs(4, 3) == [2, 2, 2]
    sisa = SISA(SISAConfig(shards=2, slices=3, train=recipe), lambda s: nn.Linear(4, 2), tmp_path)
    fit = sisa.fit(data)
    assert fit.sample_epochs == 2 * (2 + 4 + 6) * 2  # training costs E·N = 48, as plain training would
    by_slice = {0: 18, 1: 16, 2: 10}
    costs = []
    for i, (_, r) in sisa.assignment().items():
        plan = sisa.plan([i])
        assert plan.expected_sample_epochs == by_slice[r]
        costs.append(plan.expected_sample_epochs)
    assert np.mean(costs) == pytest.approx(44 / 3)
    assert np.mean(costs) == pytest.approx(sisa_expected_cost(12, 2, 3, 4) - 2 * (3 + 1) / 2)
    # the measured cost of a deletion is the planned one
    victim = next(i for i, (_, r) in sisa.assignment().items() if r == 1)
    rep = sisa.delete([victim])
    assert rep.sample_epochs == 16
    # a batch: two points in the same shard plan that shard once, from the earlier slice
    same_shard = [i for i, (s, _) in sisa.assignment().items() if s == sisa.shard_of(victim)]
    a = next(i for i in same_shard if sisa.assignment()[i][1] == 0)
    b = next(i for i in same_shard if sisa.assignment()[i][1] == 2)
    plan = sisa.plan([a, b])
    assert plan.affected == {sisa.shard_of(victim): 0}
    # prefixes after deleting victim, a, b: slice sizes 1, 1, 1 → 2·(1 + 2 + 3) = 12
    assert plan.expected_sample_epochs == 12
