"""Generative-model unlearning methods (track ``generative``): the retrain oracle, fine-tuning on D_r, gradient ascent
on D_f, Text-to-Unlearn (GANs, text-guided) and ForgetMe (diffusion, LoRA on edited images). They unlearn the
generators of :mod:`unlearnkit.models.generative`; D_f and D_r are image :class:`~unlearnkit.data.base.SampleSet`s."""

from unlearnkit.methods.generative import finetune, forgetme, grad_ascent, retrain, text_to_unlearn  # noqa: F401
