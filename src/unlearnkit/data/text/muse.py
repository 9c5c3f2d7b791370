"""MUSE loader (Shi et al. 2024, arXiv:2407.06460): the layout of one corpus folder of the MUSE benchmark
(``jaechan-repo/muse_bench`` ``data/{bbc,hp}/``; on the hub ``muse-bench/MUSE-News`` / ``MUSE-Books``)::

    raw/forget.txt  raw/retain1.txt  raw/retain2.txt  [raw/holdout.txt]      (or .json: a JSON list of strings)
    verbmem/forget.json            [{"prompt": str, "gt": str}, ...]
    knowmem/forget_qa.json         [{"question": str, "answer": str}, ...]   + forget_qa_icl.json (in-context examples)
    knowmem/retain_qa.json         (the GitHub copy names it retain2_qa.json) + retain_qa_icl.json / retain2_qa_icl.json
    privleak/forget.json  privleak/retain.json (or retain2.json)  privleak/holdout.json   [str, ...]

The raw corpora become QA sets of text chunks with an empty question (train with ``fmt="raw"``): D = forget ∪ retain1
(MUSE's target model saw forget and retain; retain1 is the retain set unlearning methods may use; retain2 is held for
utility evaluation), D_f = forget, D_r = retain1. Texts are split into chunks of at most ``chunk_chars`` characters at
paragraph boundaries (MUSE trains on 2048-token chunks of LLaMA's tokenizer; a character budget keeps the loader
tokenizer-free). Ids: forget chunks 0.., retain1 chunks from 1_000_000.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.errors import DataError


def _load_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"MUSE file {path} is not valid JSON ({err.msg} at line {err.lineno})") from err


def _first(root: Path, *names: str, required: bool = True) -> Path | None:
    for n in names:
        if (root / n).is_file():
            return root / n
    if required:
        raise DataError(f"MUSE folder {root} lacks {' or '.join(names)}; expected the muse_bench corpus layout "
                        "(raw/, verbmem/, knowmem/, privleak/)")
    return None


def _texts(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    data = _load_json(path)
    if not isinstance(data, list) or not all(isinstance(x, str) for x in data):
        raise DataError(f"MUSE file {path} must be a JSON list of strings")
    return data


def chunk_text(text: str, chunk_chars: int) -> list[str]:
    """Split ``text`` into chunks of ≤ ``chunk_chars`` characters at blank-line paragraph boundaries (a longer
    paragraph is cut at the budget)."""
    out, cur = [], ""
    for para in (p.strip() for p in text.split("\n\n")):
        if not para:
            continue
        while len(para) > chunk_chars:
            if cur:
                out.append(cur)
                cur = ""
            out.append(para[:chunk_chars])
            para = para[chunk_chars:]
        if cur and len(cur) + 2 + len(para) > chunk_chars:
            out.append(cur)
            cur = para
        else:
            cur = f"{cur}\n\n{para}" if cur else para
    if cur:
        out.append(cur)
    return out


def _qa(path: Path, name: str, id0: int) -> QASet:
    rows = _load_json(path)
    if not isinstance(rows, list):
        raise DataError(f"MUSE file {path} must be a JSON list of objects with 'question' and 'answer'")
    items = []
    for i, r in enumerate(rows):
        for f in ("question", "answer"):
            if not isinstance(r, dict) or not isinstance(r.get(f), str):
                raise DataError(f"MUSE data file {path} lacks field '{f}' (a string) in item {i}")
        items.append(QAItem(id0 + i, r["question"], r["answer"]))
    return QASet(name, items, str(path))


def load_muse(root: str | Path, *, chunk_chars: int = 2000, seed: int = 0) -> TextTask:
    """Load one MUSE corpus folder into a :class:`TextTask`.

    Returns:
        TextTask with full / forget / retain (raw chunks, question ""), eval_sets ``knowmem_forget``,
        ``knowmem_retain``, ``retain2`` (raw chunks for utility), and extras ``verbmem`` (list of {prompt, gt}),
        ``knowmem_forget_icl``, ``knowmem_retain_icl`` (QASets), ``privleak`` ({forget, retain, holdout}: lists of str).

    Raises:
        DataError: a missing file or field (message names both), an empty forget corpus.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MUSE root {root} is not a folder")
    raw = root / "raw"

    def chunks(stem: str, required: bool = True) -> list[str]:
        p = _first(raw, f"{stem}.txt", f"{stem}.json", required=required)
        return [c for t in _texts(p) for c in chunk_text(t, chunk_chars)] if p else []

    forget = QASet("forget", (QAItem(i, "", t) for i, t in enumerate(chunks("forget"))), str(raw / "forget"))
    retain = QASet("retain", (QAItem(1_000_000 + i, "", t) for i, t in enumerate(chunks("retain1"))),
                   str(raw / "retain1"))
    full = QASet("full", forget.items + retain.items, str(raw))
    check_split(full, forget, retain, f"MUSE corpus {root}")
    retain2 = QASet("retain2", (QAItem(2_000_000 + i, "", t) for i, t in enumerate(chunks("retain2", False))),
                    str(raw / "retain2"))
    vm_path = _first(root / "verbmem", "forget.json")
    verbmem = _load_json(vm_path)
    if not isinstance(verbmem, list):
        raise DataError(f"MUSE file {vm_path} must be a JSON list of {{prompt, gt}} objects")
    for i, r in enumerate(verbmem):
        for f in ("prompt", "gt"):
            if not isinstance(r, dict) or not isinstance(r.get(f), str):
                raise DataError(f"MUSE data file {vm_path} lacks field '{f}' (a string) in item {i}")
    km = root / "knowmem"
    kf = _qa(_first(km, "forget_qa.json"), "knowmem_forget", 0)
    kr = _qa(_first(km, "retain_qa.json", "retain2_qa.json"), "knowmem_retain", 1_000_000)
    kf_icl = _qa(_first(km, "forget_qa_icl.json"), "knowmem_forget_icl", 0)
    kr_p = _first(km, "retain_qa_icl.json", "retain2_qa_icl.json", required=False)
    kr_icl = _qa(kr_p, "knowmem_retain_icl", 0) if kr_p else kf_icl.renamed("knowmem_retain_icl")
    pl = root / "privleak"
    privleak = {
        "forget": _texts(_first(pl, "forget.json")),
        "retain": _texts(_first(pl, "retain.json", "retain2.json")),
        "holdout": _texts(_first(pl, "holdout.json")),
    }
    scenario = {"kind": "muse", "source": "muse", "root": str(root), "n_forget": len(forget),
                "n_retain": len(retain), "n_test": len(privleak["holdout"]), "chunk_chars": chunk_chars}
    extras = {"verbmem": [{"prompt": r["prompt"], "gt": r["gt"]} for r in verbmem], "knowmem_forget_icl": kf_icl,
              "knowmem_retain_icl": kr_icl, "privleak": privleak}
    return TextTask(f"muse_{root.name}", full, forget, retain,
                    {"knowmem_forget": kf, "knowmem_retain": kr, "retain2": retain2}, scenario, extras)
