"""LLM unlearning methods (``track = "llm"``): ga, grad_diff, npo, simnpo, idk_po, dpo, idk_dpo, rmu, undial, wga,
satimp, rocr, mrp, needle (every optimisation-based one takes ``smoothing``: SAM / RS / GNP / weight averaging);
uoe (MoE), codeeraser (code); inference-time: uld, eco, guard, alu, icul, neuron_adjust, key_space_detection,
suppress_tokens.

Call them with an :class:`LLMContext` carrying the tokenizer and the prompt format::

    method = METHODS.build("npo", {"beta": 0.1, "epochs": 5, "lr": 1e-4})
    result = method.unlearn(model, task.forget, task.retain, engine, LLMContext(seed=0, tokenizer=tok, fmt="qa"))
"""

from unlearnkit.methods.llm.base import (
    LLMContext,
    LLMOptimConfig,
    LLMUnlearner,
    RetainRegConfig,
    retain_pairing,
    shard_positions,
)
from unlearnkit.methods.llm import ga, grad_diff, idk, npo, original, rmu, simnpo, suppress_tokens  # noqa: F401, E501
from unlearnkit.methods.llm import alu, eco, guard, icul, skill_unlearning, uld  # noqa: F401, E402  (issue 16)
from unlearnkit.methods.llm import codeeraser, uoe  # noqa: F401,E402  (code models, mixture-of-experts: issue 18)
from unlearnkit.methods.llm import mrp, needle, rocr, satimp, undial, wga  # noqa: F401, E402

__all__ = ["LLMContext", "LLMOptimConfig", "LLMUnlearner", "RetainRegConfig", "retain_pairing", "shard_positions"]
