"""Recommendation unlearning methods (track ``recsys``): retrain oracle, reverse BPR (MMRecUn), RecEraser, UnlearnRec, gradient
ascent. They unlearn :class:`~unlearnkit.models.recsys.Recommender` models; D_f and D_r are
:class:`~unlearnkit.data.recsys.Interactions`."""

from unlearnkit.methods.recsys import grad_ascent, receraser, retrain, reverse_bpr, unlearnrec  # noqa: F401
