"""Reference models of metrics that compare θ_u with the oracle θ_r or the original θ_o (``EvalContext.references``).

The runner (or a user of the Python API) puts them there::

    EvalContext(model, task, engine, seed=seed,
                references={"oracle_model": theta_r, "original_model": theta_o})

Both are ``nn.Module`` classifiers of the same architecture as the evaluated model, already trained; metrics only
run them in eval mode without gradients (the training flag is restored) and never modify their weights.
"""

from __future__ import annotations

from torch import nn

from unlearnkit.errors import ConfigError
from unlearnkit.metrics.base import EvalContext

ORACLE_KEY = "oracle_model"
ORIGINAL_KEY = "original_model"
_WHAT = {ORACLE_KEY: "the retrained oracle θ_r (trained from scratch on D_r only)",
         ORIGINAL_KEY: "the original model θ_o (trained on the full training set D, before unlearning)"}


def require_reference(ctx: EvalContext, key: str, metric: str) -> nn.Module:
    """``ctx.references[key]`` as an ``nn.Module``.

    Raises:
        ConfigError: the reference is missing or not an ``nn.Module`` (the message says how to supply it).
    """
    ref = ctx.references.get(key)
    how = (f"pass it as EvalContext(model, task, engine, references={{'{key}': model}}); the benchmark runner "
           f"supplies '{ORACLE_KEY}' and '{ORIGINAL_KEY}' from its cached θ_r and θ_o")
    if ref is None:
        have = ", ".join(sorted(ctx.references)) or "none"
        raise ConfigError(f"metric '{metric}' needs {_WHAT.get(key, key)} in references['{key}'], but it is "
                          f"missing (references given: {have}); {how}")
    if not isinstance(ref, nn.Module):
        raise ConfigError(f"metric '{metric}': references['{key}'] must be an nn.Module, got "
                          f"{type(ref).__name__}; {how}")
    return ref


def full_test_split(ctx: EvalContext) -> str:
    """The EvalContext split name of the whole test set D_t (``test`` outside class scenarios, where it is the same
    set, so the cached predictions are shared; ``test_all`` in class scenarios)."""
    return "test" if ctx.task.test_forgotten is None else "test_all"
