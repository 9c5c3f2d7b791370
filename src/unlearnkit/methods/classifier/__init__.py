"""Approximate unlearning methods for classifiers (one file per method)."""

from unlearnkit.methods.classifier import finetune, grad_ascent, random_label  # noqa: F401
from unlearnkit.methods.classifier import bad_teacher, boundary_expanding, boundary_shrink  # noqa: F401
from unlearnkit.methods.classifier import laf, scrub, unsir  # noqa: F401
from unlearnkit.methods.classifier import cf_k, eu_k, l1_sparse, prune_ft, salun, salun_soft  # noqa: F401
from unlearnkit.methods.classifier import analytic_head, fisher_forgetting, lfssd, ssd  # noqa: F401
from unlearnkit.methods.classifier import clean_unlearning, concept_poison  # noqa: F401
