"""MUSE loader (Shi et al. 2024, arXiv:2407.06460): one corpus folder of the MUSE benchmark, in the layouts users have.

The authors' layout (``jaechan-repo/muse_bench`` and ``swj0419/muse_bench``'s ``load_data.py``: ``data/{bbc,hp}/``
or ``data/{news,books}/``; on the hub ``muse-bench/MUSE-News`` / ``MUSE-Books``)::

    raw/forget.txt  raw/retain1.txt  raw/retain2.txt  [raw/holdout.txt]      (or .json: a JSON list of strings;
                                                                              or the hub's raw/<split>-*.parquet;
                                                                              or the hub's JSON copies in train/)
    verbmem/forget.json            [{"prompt": str, "gt": str}, ...]
    knowmem/forget_qa.json         [{"question": str, "answer": str}, ...]   + forget_qa_icl.json (in-context examples)
    knowmem/retain_qa.json         (GitHub: retain2_qa.json; hub files: retain2-qa.json, forget-qa.json, ...)
                                   + retain_qa_icl.json / retain2_qa_icl.json / retain2-qa-icl.json
    privleak/forget.json  [privleak/retain.json or retain2.json]  privleak/holdout.json   [str, ...]

The raw corpora become QA sets of text chunks with an empty question (train with ``fmt="raw"``): D = forget ∪ retain1
(MUSE's target model saw forget and retain; retain1 is the retain set unlearning methods may use; retain2 is held for
utility evaluation), D_f = forget, D_r = retain1. Texts are split into chunks of at most ``chunk_chars`` characters at
paragraph boundaries (MUSE trains on 2048-token chunks of LLaMA's tokenizer; a character budget keeps the loader
tokenizer-free; chunks longer than the training ``max_len`` in tokens are cut there, and the count is reported by
:func:`unlearnkit.llm.lm.encode_pairs` as a :class:`~unlearnkit.llm.tokenize.TruncationWarning`). Ids: forget chunks
0.., retain1 chunks from 1_000_000.

What may be missing, and what is done then (each recorded in ``scenario["derived"]`` and shown in the report):

* ``raw/retain1`` (absent in some copies of the authors' data): D_r is derived from ``raw/retain2`` — the other
  retain text the target model saw, which MUSE's own baselines may also regularise on. KnowMem-retain questions
  are about that text, so a method that trains on D_r has seen their source; the scenario says so.
* ``privleak/retain`` (not read by any metric): an empty list.
* ``raw/retain2`` (only the utility eval set ``retain2``): empty.
* ``raw/holdout``: not read (PrivLeak uses ``privleak/holdout.json``).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.errors import ConfigError, DataError

HUB_IDS = ("muse-bench/MUSE-News", "muse-bench/MUSE-Books")
# (hub config, hub split) → file of the muse_bench layout; raw/privleak rows have "text", verbmem "prompt"/"gt",
# knowmem "question"/"answer" (the hub data sets' cards)
HUB_FILES = {
    ("raw", "forget"): "raw/forget.json", ("raw", "retain1"): "raw/retain1.json",
    ("raw", "retain2"): "raw/retain2.json", ("raw", "holdout"): "raw/holdout.json",
    ("verbmem", "forget"): "verbmem/forget.json",
    ("knowmem", "forget_qa"): "knowmem/forget_qa.json", ("knowmem", "retain_qa"): "knowmem/retain_qa.json",
    ("knowmem", "forget_qa_icl"): "knowmem/forget_qa_icl.json",
    ("knowmem", "retain_qa_icl"): "knowmem/retain_qa_icl.json",
    ("privleak", "forget"): "privleak/forget.json", ("privleak", "retain"): "privleak/retain.json",
    ("privleak", "holdout"): "privleak/holdout.json",
}


def default_cache_dir() -> Path:
    """``$UNLEARNKIT_CACHE`` or ``~/.cache/unlearnkit``: where hub data sets are laid out as local folders."""
    return Path(os.environ.get("UNLEARNKIT_CACHE") or Path.home() / ".cache" / "unlearnkit")


def fetch_muse_hub(hub_id: str = "muse-bench/MUSE-News", dest: str | Path | None = None) -> Path:
    """Lay a MUSE corpus from the Hugging Face hub out as a local folder in the muse_bench layout (once).

    Each (config, split) of :data:`HUB_FILES` is read with ``datasets.load_dataset(hub_id, config, split=split)``
    and written as a JSON list (``raw`` / ``privleak``: the ``text`` column; ``verbmem``: ``{prompt, gt}``;
    ``knowmem``: ``{question, answer}``); the folder is written under a temporary name and renamed when complete,
    so an interrupted download never leaves a half folder that looks finished.

    Args:
        hub_id: ``muse-bench/MUSE-News`` or ``muse-bench/MUSE-Books`` (or a mirror with the same configs).
        dest: target folder (default ``default_cache_dir()/muse/<hub_id with / → __>``).

    Returns:
        The folder, ready for :func:`load_muse`.

    Raises:
        ConfigError: datasets is not installed.  DataError: the hub (or the network) is unreachable, or a split
            lacks a column (names the config, split and column).
    """
    dest = Path(dest) if dest is not None else default_cache_dir() / "muse" / hub_id.replace("/", "__")
    if (dest / "verbmem" / "forget.json").is_file():
        return dest
    try:
        import datasets
    except ImportError as err:
        raise ConfigError("loading MUSE from the hub needs datasets: pip install 'unlearnkit[llm]'") from err
    dest.parent.mkdir(parents=True, exist_ok=True)
    import fcntl

    # one writer at a time (the ranks of a multi-process launch all get here): the others wait, then find it done
    with open(dest.parent / f".{dest.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (dest / "verbmem" / "forget.json").is_file():
            return dest
        return _fetch_muse_locked(datasets, hub_id, dest)


def _fetch_muse_locked(datasets: Any, hub_id: str, dest: Path) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix=dest.name + ".", dir=dest.parent))
    try:
        for (config, split), rel in HUB_FILES.items():
            try:
                ds = datasets.load_dataset(hub_id, config, split=split)
            except Exception as err:  # noqa: BLE001 - network, missing config: one clear message
                raise DataError(f"could not load {hub_id} config {config!r} split {split!r} from the Hugging Face "
                                f"hub ({type(err).__name__}: {err}); pass root=<a MUSE corpus folder> to use a local "
                                "copy") from err
            cols = {"raw": ("text",), "privleak": ("text",), "verbmem": ("prompt", "gt"),
                    "knowmem": ("question", "answer")}[config]
            missing = [c for c in cols if c not in ds.column_names]
            if missing:
                raise DataError(f"{hub_id} config {config!r} split {split!r} lacks column(s) {missing} "
                                f"(has {ds.column_names})")
            rows = [r[cols[0]] for r in ds] if len(cols) == 1 else [{c: r[c] for c in cols} for r in ds]
            out = tmp / rel
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")
        if dest.exists():
            shutil.rmtree(dest)
        tmp.rename(dest)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return dest


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


def _raw_file(root: Path, stem: str) -> Path | None:
    """The file of raw split ``stem``: ``raw/<stem>.txt``, ``.json``, the hub's ``raw/<stem>-*.parquet`` or its JSON
    copy ``train/<stem>.json``; None when there is none."""
    for folder in (root / "raw", root / "train"):
        for name in (f"{stem}.txt", f"{stem}.json"):
            if (folder / name).is_file():
                return folder / name
        parquet = sorted(folder.glob(f"{stem}-*.parquet")) + sorted(folder.glob(f"{stem}.parquet"))
        if parquet:
            return parquet[0]
    return None


def _texts(path: Path) -> list[str]:
    if path.suffix == ".txt":
        return [path.read_text(encoding="utf-8")]
    if path.suffix == ".parquet":
        try:
            import pandas as pd

            shards = sorted(path.parent.glob(path.name.split("-")[0] + "-*-of-*.parquet")) or [path]
            frames = [pd.read_parquet(p) for p in shards]
        except ImportError as err:
            raise ConfigError(f"reading {path} needs pandas and pyarrow: pip install pandas pyarrow (or put the "
                              "split there as .txt / .json)") from err
        if any("text" not in f.columns for f in frames):
            raise DataError(f"MUSE parquet file {path} has no 'text' column")
        return [str(t) for f in frames for t in f["text"].tolist()]
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
        DataError: a missing required file or field (message names both): raw/forget, raw/retain1 *and* raw/retain2,
            verbmem/forget.json, knowmem forget QA / ICL and retain QA, privleak forget / holdout; an empty forget
            corpus.  ConfigError: a parquet split without pandas/pyarrow installed.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"MUSE root {root} is not a folder")
    raw = root / "raw"
    derived: list[str] = []

    def chunks(stem: str) -> list[str] | None:
        p = _raw_file(root, stem)
        return None if p is None else [c for t in _texts(p) for c in chunk_text(t, chunk_chars)]

    forget_chunks = chunks("forget")
    if forget_chunks is None:
        raise DataError(f"MUSE folder {root} lacks raw/forget.txt (or .json, raw/forget-*.parquet, train/forget.json); "
                        "expected the muse_bench corpus layout (raw/, verbmem/, knowmem/, privleak/)")
    retain2_chunks = chunks("retain2")
    retain1_chunks = chunks("retain1")
    if retain1_chunks is None:
        if not retain2_chunks:
            raise DataError(f"MUSE folder {root} has neither raw/retain1 nor raw/retain2 (.txt, .json or parquet): "
                            "D_r (the retain text the target model saw) cannot be built")
        retain1_chunks = retain2_chunks
        derived.append("raw/retain1 missing: D_r = raw/retain2 (the target model's other retain text; KnowMem-retain "
                       "questions are about it, so methods that train on D_r see their source)")
    if retain2_chunks is None:
        retain2_chunks = []
        derived.append("raw/retain2 missing: the retain2 utility set is empty")
    forget = QASet("forget", (QAItem(i, "", t) for i, t in enumerate(forget_chunks)), str(raw / "forget"))
    retain = QASet("retain", (QAItem(1_000_000 + i, "", t) for i, t in enumerate(retain1_chunks)),
                   str(raw / "retain1"))
    full = QASet("full", forget.items + retain.items, str(raw))
    check_split(full, forget, retain, f"MUSE corpus {root}")
    retain2 = QASet("retain2", (QAItem(2_000_000 + i, "", t) for i, t in enumerate(retain2_chunks)),
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
    kf = _qa(_first(km, "forget_qa.json", "forget-qa.json"), "knowmem_forget", 0)
    kr = _qa(_first(km, "retain_qa.json", "retain2_qa.json", "retain2-qa.json", "retain-qa.json"),
             "knowmem_retain", 1_000_000)
    kf_icl = _qa(_first(km, "forget_qa_icl.json", "forget-qa-icl.json"), "knowmem_forget_icl", 0)
    kr_p = _first(km, "retain_qa_icl.json", "retain2_qa_icl.json", "retain2-qa-icl.json", "retain-qa-icl.json",
                  required=False)
    if kr_p is None:
        derived.append("knowmem retain in-context examples missing: the forget ones are used")
    kr_icl = _qa(kr_p, "knowmem_retain_icl", 0) if kr_p else kf_icl.renamed("knowmem_retain_icl")
    pl = root / "privleak"
    pl_retain = _first(pl, "retain.json", "retain2.json", required=False)
    if pl_retain is None:
        derived.append("privleak/retain missing: empty (no metric reads it)")
    privleak = {
        "forget": _texts(_first(pl, "forget.json")),
        "retain": _texts(pl_retain) if pl_retain else [],
        "holdout": _texts(_first(pl, "holdout.json")),
    }
    scenario = {"kind": "muse", "source": "muse", "root": str(root), "corpus": root.name, "n_forget": len(forget),
                "n_retain": len(retain), "n_test": len(privleak["holdout"]), "chunk_chars": chunk_chars}
    if derived:
        scenario["derived"] = derived
    extras = {"verbmem": [{"prompt": r["prompt"], "gt": r["gt"]} for r in verbmem], "knowmem_forget_icl": kf_icl,
              "knowmem_retain_icl": kr_icl, "privleak": privleak}
    return TextTask(f"muse_{root.name}", full, forget, retain,
                    {"knowmem_forget": kf, "knowmem_retain": kr, "retain2": retain2}, scenario, extras)
