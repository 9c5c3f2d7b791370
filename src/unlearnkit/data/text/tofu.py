"""TOFU loader (Maini et al. 2024, arXiv:2401.06121): local JSON Lines files or the Hugging Face dataset ``locuslab/TOFU``.

Local layout (one JSON object per line, despite the ``.json`` suffix; see ``shared/data/tofu/SOURCE.md``)::

    full.json  forget01.json forget05.json forget10.json  retain99.json retain95.json retain90.json
    forget01_perturbed.json ... retain_perturbed.json  real_authors_perturbed.json  world_facts_perturbed.json

Fields: ``question``, ``answer``; the perturbed files add ``paraphrased_answer`` and ``perturbed_answer`` (a list) and
some ``paraphrased_question`` (kept in ``task.extras["paraphrased_question"]``, item id → question);
``real_authors_perturbed`` / ``world_facts_perturbed`` have ``perturbed_answer`` but no paraphrase (TOFU then uses the
answer itself as the "true" side of the truth ratio).

Sample ids are row indices in ``full.json`` (forget / retain / perturbed rows are matched to it by (question, answer));
the utility sets get ids ``1_000_000 + row`` (real authors) and ``2_000_000 + row`` (world facts). TOFU has 20 QA per
author in author-major order, so ``subject`` is ``"author_<row // 20>"``. TOFU's own "I don't know" answers live in its
GitHub repository, not in the data set; with ``with_idk`` every item gets one of unlearnkit's own IdK phrases, chosen
by a hash of (seed, id).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.data.text.synthetic import _IDK
from unlearnkit.errors import ConfigError, DataError

SPLITS = {"forget01": "retain99", "forget05": "retain95", "forget10": "retain90"}
QA_PER_AUTHOR = 20
HUB_ID = "locuslab/TOFU"


def _read_rows(root: str | Path | None, split: str) -> tuple[list[dict[str, Any]], str]:
    """Rows of ``split`` and where they came from (a file path or ``hf:locuslab/TOFU/<split>``)."""
    if root is None:
        try:
            import datasets
        except ImportError as err:  # pragma: no cover - depends on the environment
            raise ConfigError("loading TOFU from the hub needs datasets: pip install 'unlearnkit[llm]'") from err
        try:
            ds = datasets.load_dataset(HUB_ID, split, split="train")
        except Exception as err:  # pragma: no cover - network
            raise DataError(f"could not load {HUB_ID} config {split!r} from the Hugging Face hub ({err}); "
                            "pass root=<folder with the TOFU .json files> to load a local copy") from err
        return [dict(r) for r in ds], f"hf:{HUB_ID}/{split}"
    path = Path(root) / f"{split}.json"
    if not path.is_file():
        raise DataError(f"TOFU file {path} not found; root must hold the TOFU JSON Lines files ({split}.json, ...)")
    rows = []
    with path.open(encoding="utf-8") as fh:
        for ln, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{ln} is not valid JSON ({err.msg}); TOFU files are JSON Lines") from err
    return rows, str(path)


def _field(row: dict[str, Any], name: str, source: str, i: int, kind: type = str) -> Any:
    if name not in row or row[name] is None:
        raise DataError(f"TOFU data file {source} lacks field '{name}' in row {i} (has {sorted(row)}); "
                        f"every row of this file needs '{name}'")
    v = row[name]
    if kind is list:
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise DataError(f"TOFU data file {source}: field '{name}' in row {i} must be a list of strings")
        return tuple(v)
    if not isinstance(v, str):
        raise DataError(f"TOFU data file {source}: field '{name}' in row {i} must be a string, got {type(v).__name__}")
    return v


def _idk(seed: int, sample_id: int) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}/idk/{sample_id}".encode()).digest()[:4], "big")
    return _IDK[h % len(_IDK)]


def _match(rows: list[dict[str, Any]], source: str, index: dict[tuple[str, str], int]) -> list[int]:
    ids = []
    for i, r in enumerate(rows):
        key = (_field(r, "question", source, i), _field(r, "answer", source, i))
        if key not in index:
            raise DataError(f"row {i} of {source} is not in TOFU full.json (question {key[0][:60]!r}); "
                            "the split files must come from the same TOFU release as full.json")
        ids.append(index[key])
    return ids


def load_tofu(
    root: str | Path | None,
    forget_split: str = "forget10",
    *,
    seed: int = 0,
    with_idk: bool = True,
    utility_in_train: bool = False,
) -> TextTask:
    """Load TOFU into a :class:`TextTask`.

    Args:
        root: folder with the JSON Lines files; ``None`` loads ``locuslab/TOFU`` with ``datasets`` (needs network).
        forget_split: ``forget01`` | ``forget05`` | ``forget10`` (retain = retain99 / 95 / 90).
        seed: seeds the choice of IdK phrases.
        with_idk: give every item an "I don't know" alternative (for IdkPO / IdkDPO).
        utility_in_train: add the real-authors and world-facts QA pairs to D and D_r (never to D_f). Not TOFU's
            protocol (its pretrained models know them from pretraining); for models trained from scratch, which
            otherwise score ≈ 0 on them and so get model utility ≈ 0 whatever they retain. Their ids are those of
            the utility evaluation sets (1_000_000 + row, 2_000_000 + row), so those sets then measure knowledge
            the models were taught.

    Raises:
        ConfigError: unknown split.  DataError: a missing file, a row lacking a field (message names field and file),
            rows not matching full.json, an empty forget split, forget ∪ retain ≠ full.
    """
    if forget_split not in SPLITS:
        raise ConfigError(f"unknown TOFU forget split {forget_split!r}; use one of {sorted(SPLITS)}")
    full_rows, full_src = _read_rows(root, "full")
    items = []
    for i, r in enumerate(full_rows):
        q, a = _field(r, "question", full_src, i), _field(r, "answer", full_src, i)
        items.append(QAItem(i, q, a, subject=f"author_{i // QA_PER_AUTHOR}",
                            idk_answer=_idk(seed, i) if with_idk else None))
    full = QASet("full", items, full_src)
    index = {(it.question, it.answer): it.id for it in items}
    f_rows, f_src = _read_rows(root, forget_split)
    forget = full.select_ids(_match(f_rows, f_src, index), "forget")
    forget = QASet("forget", forget.items, f_src)
    retain = full.exclude_ids(forget.ids, "retain")
    retain = QASet("retain", retain.items, full_src)
    check_split(full, forget, retain, f"TOFU {forget_split} ({f_src})")
    r_rows, r_src = _read_rows(root, SPLITS[forget_split])
    r_ids = sorted(_match(r_rows, r_src, index))
    if r_ids != sorted(retain.ids.tolist()):
        raise DataError(f"{r_src} is not the complement of {f_src} in full.json; use files of one TOFU release")

    para_questions: dict[int, str] = {}  # TOFU's paraphrased_question (the form probes of unlearnkit.metrics)

    def perturbed(split: str, name: str, id0: int | None) -> QASet:
        rows, src = _read_rows(root, split)
        ids = _match(rows, src, index) if id0 is None else [id0 + i for i in range(len(rows))]
        out = []
        for i, (r, sid) in enumerate(zip(rows, ids)):
            if isinstance(r.get("paraphrased_question"), str):
                para_questions[int(sid)] = r["paraphrased_question"]
            para = _field(r, "paraphrased_answer", src, i) if id0 is None else None
            pert = _field(r, "perturbed_answer", src, i, list)
            base = full[full.position(sid)] if id0 is None else None
            out.append(QAItem(sid, _field(r, "question", src, i), _field(r, "answer", src, i), para, pert,
                              base.subject if base else None,
                              base.idk_answer if base else (_idk(seed, sid) if with_idk else None)))
        return QASet(name, out, src)

    eval_sets = {
        "forget": perturbed(f"{forget_split}_perturbed", "forget", None),
        "retain": perturbed("retain_perturbed", "retain", None),
        "real_authors": perturbed("real_authors_perturbed", "real_authors", 1_000_000),
        "world_facts": perturbed("world_facts_perturbed", "world_facts", 2_000_000),
    }
    # D_f's items carry their paraphrased / perturbed answers from the forget split's perturbed file (the same rows),
    # as the synthetic TOFU-style items do: ECO's σ search, ULD's augmentation and ICUL's wrong labels read them from
    # D_f. Only D_f's own set gets them; `full` (and so any tokenizer corpus) is unchanged.
    pert = {it.id: it for it in eval_sets["forget"]}
    forget = QASet("forget", [replace(it, paraphrased_answer=pert[it.id].paraphrased_answer,
                                      perturbed_answers=tuple(pert[it.id].perturbed_answers))
                              if it.id in pert else it for it in forget.items], f_src)
    if utility_in_train:
        util = [QAItem(it.id, it.question, it.answer, idk_answer=it.idk_answer)
                for name in ("real_authors", "world_facts") for it in eval_sets[name]]
        full = QASet("full", [*full.items, *util], full_src)
        retain = QASet("retain", [*retain.items, *util], full_src)
        check_split(full, forget, retain, f"TOFU {forget_split} with utility sets in training")
    subjects = sorted({it.subject for it in forget if it.subject})
    scenario = {"kind": "tofu", "split": forget_split, "source": "tofu", "root": str(root) if root else HUB_ID,
                "n_forget": len(forget), "n_retain": len(retain), "n_test": 0, "subjects_forget": subjects,
                "utility_in_train": utility_in_train}
    return TextTask("tofu", full, forget, retain, eval_sets, scenario,
                    {"paraphrased_question": para_questions} if para_questions else {})
