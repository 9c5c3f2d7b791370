"""Text data for the LLM track: QA sets in the TOFU schema, the built-in synthetic generator, TOFU and MUSE loaders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from unlearnkit.data.text.qa import QAItem, QASet, TextTask
from unlearnkit.data.text.synthetic import build_synthetic_task, generate_synthetic
from unlearnkit.errors import ConfigError


def build_text_task(source: str = "synthetic", root: str | Path | None = None, forget_split: str = "forget10",
                    seed: int = 0, **gen: Any) -> TextTask:
    """Build an LLM unlearning task.

    Args:
        source: ``synthetic`` (built-in generator; ``gen`` = n_persons, qa_per_person, n_perturbed, with_idk,
            utility_in_train), ``tofu`` (``root`` = folder of TOFU JSON Lines files, or None for the hub;
            ``gen`` = with_idk) or ``muse`` (``root`` = a MUSE corpus folder, or None for the hub: ``gen`` may give
            ``hub_id``, default ``muse-bench/MUSE-News``; ``gen`` = chunk_chars) or ``rwku`` (``root`` = RWKU's released
            folder, or None for fictitious offline targets; ``gen`` = n_targets, n_forget, and without root
            n_persons, qa_per_person; :mod:`unlearnkit.data.text.rwku`).
        forget_split: ``forget01`` | ``forget05`` | ``forget10`` (TOFU-style sources).
        seed: generator / IdK-choice seed.

    Raises:
        ConfigError: unknown source or split.  DataError: missing files or fields, empty forget split.
    """
    if source == "synthetic":
        return build_synthetic_task(forget_split, seed=seed, **gen)
    if source == "tofu":
        from unlearnkit.data.text.tofu import load_tofu

        return load_tofu(root, forget_split, seed=seed, **gen)
    if source == "muse":
        from unlearnkit.data.text.muse import load_muse

        hub_id = gen.pop("hub_id", None)
        if root is None:
            from unlearnkit.data.text.muse import fetch_muse_hub

            root = fetch_muse_hub(hub_id or "muse-bench/MUSE-News")
        return load_muse(root, seed=seed, **gen)
    if source == "rwku":
        from unlearnkit.data.text.rwku import build_rwku_task, load_rwku, synthetic_rwku

        n_targets, n_forget = gen.pop("n_targets", None), int(gen.pop("n_forget", 1))
        if root is None:
            targets = synthetic_rwku(n_targets or 4, seed=seed, **gen)
        else:
            targets = load_rwku(root, targets=n_targets)
        return build_rwku_task(targets, n_forget, seed=seed, source="rwku" if root else "rwku_synthetic")
    raise ConfigError(f"unknown text data source {source!r}; use synthetic, tofu, muse or rwku")


__all__ = ["QAItem", "QASet", "TextTask", "build_text_task", "build_synthetic_task", "generate_synthetic"]
