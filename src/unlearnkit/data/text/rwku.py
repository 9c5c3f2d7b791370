"""RWKU, the Real-World Knowledge Unlearning benchmark (Jin et al. 2024, arXiv:2406.10890): a loader for its released
per-target layout, the task the LLM track builds from it, and the forget corpus of the *target-only* setting.

Released layout (``jinzhuoran/RWKU``, ``process/data_process.py``; one folder per target under ``Target/``, each file a
JSON list of objects)::

    Target/<k>_<Name_With_Underscores>/
        intro.json            [{"target": "Stephen King", "intro": "..."}]            (optional)
        forget_level1.json    fill-in-the-blank probes   {"query", "answer", "level": "1", "subject"}
        forget_level2.json    question-answer probes     {"query", "answer", "level": "2", "subject"}
        forget_level3.json    adversarial probes         {"query", "answer", "level": "3", "subject", "type"}
        neighbor_level1.json  neighbour knowledge, fill-in-the-blank (to keep)
        neighbor_level2.json  neighbour knowledge, QA (to keep)
        passage.json          [{"text", ...}] background passages                      (optional)

``root`` may be the folder that holds ``Target/`` or ``Target/`` itself. Required per probe: ``query`` and
``answer`` (strings), ``type`` for level 3; ``subject`` defaults to the target's name, ``level`` to the file's. A missing
file or field is a :class:`~unlearnkit.errors.DataError` naming the file, the row and the field.

Task (:func:`build_rwku_task`): the first ``n_forget`` targets (folder order ``<k>_``) are forgotten. RWKU gives an
original model and no training data; the LLM track trains θ_o (and θ_r) itself, so D is built from the probes:
D_f = the forget targets' level-1 (as "Fill in the blank: …") and level-2 probes; D_r = the other targets' level-1/2
probes and every target's neighbour probes. Level-3 (adversarial) probes are never trained on: they are evaluation
only, as are the level-1/2 probes in their RWKU prompt templates (metric ``rwku``). For a pretrained model that knows
the targets (SmolLM2, :func:`unlearnkit.data.text.synthetic.known_targets`) θ_o's fine-tune on D is short; the
fictitious targets of :func:`~unlearnkit.data.text.synthetic.synthetic_rwku_targets` make the benchmark run offline
with a model trained from scratch (``source: rwku`` without ``root``).

Target-only setting (RWKU §3.1: "we provide only the unlearning target and the original model"): methods are handed,
instead of D_f, a forget corpus the model writes itself (:func:`target_prompts`; the track generates the answers
with the model being unlearned, as RWKU's ``generation/pair_generation.py`` does with the original model).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.errors import ConfigError, DataError

PROBE_FILES: dict[str, tuple[str, int]] = {
    "forget_level1": ("forget", 1), "forget_level2": ("forget", 2), "forget_level3": ("forget", 3),
    "neighbor_level1": ("neighbor", 1), "neighbor_level2": ("neighbor", 2),
}
#: the evaluation sets of an RWKU task (metric ``rwku``), by (kind, level)
EVAL_SETS: dict[tuple[str, int], str] = {("forget", 1): "rwku_forget_l1", ("forget", 2): "rwku_forget_l2",
                                         ("forget", 3): "rwku_forget_l3", ("neighbor", 1): "rwku_neighbor_l1",
                                         ("neighbor", 2): "rwku_neighbor_l2"}
#: RWKU's evaluation prompts (``LLaMA-Factory/src/llmtuner/eval/eval_forget.py``) before the chat template
FILL_BLANK_PROMPT = "Please complete the blank in the following question.\nQuestion: {q}\n"
QA_PROMPT = "Please briefly answer the following question.\nQuestion: {q}\n"
#: id layout of RWKU items: target index × ID_STRIDE + file block × BLOCK + row
ID_STRIDE, BLOCK = 100_000, 10_000
_BLOCKS = {("forget", 1): 1, ("forget", 2): 2, ("forget", 3): 3, ("neighbor", 1): 4, ("neighbor", 2): 5}
TARGET_CORPUS_ID0 = 9_000_000
#: questions the target-only setting asks the model about a target (its own answers become the forget corpus)
TARGET_QUESTIONS: tuple[str, ...] = (
    "Who is {t}?", "What is {t} known for?", "Where was {t} born?", "What does {t} do?",
    "Tell me about {t}.", "What did {t} create?", "Which award did {t} receive?", "Where does {t} live today?",
)


@dataclass(frozen=True)
class RWKUProbe:
    """One RWKU probe: ``query`` (level 1 contains a blank ``___``), its ``answer``, ``level`` (1, 2, 3),
    ``kind`` (``forget`` | ``neighbor``), ``type`` (level 3's attack type, else ""), ``subject`` and where it was
    read (``source`` file, ``row``)."""

    query: str
    answer: str
    level: int
    kind: str
    subject: str
    type: str = ""
    source: str = ""
    row: int = 0


@dataclass(frozen=True)
class RWKUTarget:
    """One unlearning target: its ``name``, folder ``index`` (the ``<k>_`` prefix), ``intro`` and probes by (kind, level)
    plus background ``passages``."""

    name: str
    index: int
    intro: str = ""
    probes: dict[tuple[str, int], tuple[RWKUProbe, ...]] = field(default_factory=dict)
    passages: tuple[str, ...] = ()

    def count(self, kind: str, level: int) -> int:
        return len(self.probes.get((kind, level), ()))


def _target_dirs(root: Path) -> list[tuple[int, str, Path]]:
    base = root / "Target" if (root / "Target").is_dir() else root
    if not base.is_dir():
        raise DataError(f"RWKU folder {root} not found; it must hold Target/<k>_<Name>/ folders (RWKU's released "
                        "layout, see unlearnkit.data.text.rwku)")
    out = []
    for d in base.iterdir():
        m = re.match(r"^(\d+)_(.+)$", d.name)
        if d.is_dir() and m:
            out.append((int(m.group(1)), m.group(2).replace("_", " "), d))
    if not out:
        raise DataError(f"{base} has no target folders named <k>_<Name> (e.g. 1_Stephen_King); is it RWKU's "
                        "Target/ folder?")
    return sorted(out)


def _read_list(path: Path) -> list[dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"RWKU file {path} is not valid JSON ({err.msg}, line {err.lineno})") from err
    if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
        raise DataError(f"RWKU file {path} must hold a JSON list of objects, got {type(data).__name__}")
    return data


def _str_field(row: dict[str, Any], name: str, path: Path, i: int) -> str:
    if name not in row or row[name] is None:
        raise DataError(f"RWKU file {path} lacks field '{name}' in row {i} (the row has {sorted(row)}); every "
                        f"probe needs '{name}'")
    v = row[name]
    if not isinstance(v, str) or not v.strip():
        raise DataError(f"RWKU file {path}: field '{name}' in row {i} must be a non-empty string, got {v!r}")
    return v


def load_rwku(root: str | Path, *, targets: int | list[str] | None = None) -> list[RWKUTarget]:
    """Read RWKU targets from its released layout.

    Args:
        root: the folder that holds ``Target/`` (or ``Target/`` itself).
        targets: None = all, an int = the first that many (folder order), a list = those names (as in the folder
            names with spaces, e.g. ``"Stephen King"``).

    Returns:
        The targets in folder order.

    Raises:
        DataError: a missing folder or probe file, invalid JSON, a probe without ``query`` / ``answer`` (or ``type``
            on level 3), an unknown requested target name, no probes at all.
    """
    dirs = _target_dirs(Path(root))
    if isinstance(targets, list):
        names = {n for _, n, _ in dirs}
        missing = [t for t in targets if t not in names]
        if missing:
            raise DataError(f"RWKU target(s) {missing} not found under {root}; available e.g. "
                            f"{sorted(names)[:5]}")
        dirs = [d for d in dirs if d[1] in targets]
    elif isinstance(targets, int):
        if targets < 1:
            raise ConfigError(f"targets must be ≥ 1, got {targets}")
        dirs = dirs[:targets]
    out = []
    for k, name, d in dirs:
        intro = ""
        if (d / "intro.json").is_file():
            rows = _read_list(d / "intro.json")
            if rows:
                intro = str(rows[0].get("intro", "") or "")
                name = _str_field(rows[0], "target", d / "intro.json", 0)
        probes: dict[tuple[str, int], tuple[RWKUProbe, ...]] = {}
        for fname, (kind, level) in PROBE_FILES.items():
            path = d / f"{fname}.json"
            if not path.is_file():
                raise DataError(f"RWKU target folder {d} lacks {fname}.json (every target needs "
                                f"{', '.join(f + '.json' for f in PROBE_FILES)})")
            rows = _read_list(path)
            ps = []
            for i, r in enumerate(rows):
                q, a = _str_field(r, "query", path, i), _str_field(r, "answer", path, i)
                typ = _str_field(r, "type", path, i) if level == 3 else str(r.get("type") or "")
                lv = r.get("level", str(level))
                if str(lv) != str(level):
                    raise DataError(f"RWKU file {path}: row {i} has level {lv!r} but the file holds level {level}")
                ps.append(RWKUProbe(q, a, level, kind, str(r.get("subject") or name), typ, str(path), i))
            probes[(kind, level)] = tuple(ps)
        passages: tuple[str, ...] = ()
        if (d / "passage.json").is_file():
            rows = _read_list(d / "passage.json")
            passages = tuple(_str_field(r, "text", d / "passage.json", i) for i, r in enumerate(rows))
        out.append(RWKUTarget(name, k, intro, probes, passages))
    if not any(t.probes.get(("forget", 2)) or t.probes.get(("forget", 1)) for t in out):
        raise DataError(f"the RWKU targets under {root} have no level-1/2 forget probes")
    return out


def write_rwku_layout(targets: dict[str, dict[str, list[dict[str, Any]]]], folder: str | Path) -> Path:
    """Write targets (name → ``{file stem: rows}``, e.g. :func:`unlearnkit.data.text.synthetic.synthetic_rwku_targets`)
    in RWKU's released layout under ``folder/Target/`` and return ``folder``."""
    base = Path(folder) / "Target"
    for k, (name, files) in enumerate(targets.items(), 1):
        d = base / f"{k}_{name.replace(' ', '_')}"
        d.mkdir(parents=True, exist_ok=True)
        for stem, rows in files.items():
            (d / f"{stem}.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return Path(folder)


def synthetic_rwku(n_targets: int = 4, *, seed: int = 0, n_persons: int = 12,
                   qa_per_person: int = 10) -> list[RWKUTarget]:
    """The fictitious targets of :func:`~unlearnkit.data.text.synthetic.synthetic_rwku_targets` as loaded targets
    (no files), for ``source: rwku`` without ``root``."""
    from unlearnkit.data.text.synthetic import synthetic_rwku_targets

    raw = synthetic_rwku_targets(n_targets, n_persons=n_persons, qa_per_person=qa_per_person, seed=seed)
    out = []
    for k, (name, files) in enumerate(raw.items(), 1):
        probes = {}
        for fname, (kind, level) in PROBE_FILES.items():
            probes[(kind, level)] = tuple(RWKUProbe(r["query"], r["answer"], level, kind, r.get("subject", name),
                                                    r.get("type", ""), f"synthetic:{fname}", i)
                                          for i, r in enumerate(files[fname]))
        out.append(RWKUTarget(name, k, files["intro"][0]["intro"], probes,
                              tuple(r["text"] for r in files.get("passage", []))))
    return out


def probe_question(p: RWKUProbe) -> str:
    """The question text of a probe in the track's QA format: level 1 as "Fill in the blank: …" (the query holds the
    blank), otherwise the query itself."""
    from unlearnkit.data.text.synthetic import FILL_BLANK_TEMPLATE

    return FILL_BLANK_TEMPLATE.format(statement=p.query) if p.level == 1 else p.query


def build_rwku_task(targets: list[RWKUTarget], n_forget: int = 1, *, seed: int = 0, with_idk: bool = True,
                    source: str = "rwku") -> TextTask:
    """The LLM track's task from RWKU targets (see the module docstring).

    Args:
        targets: loaded targets (:func:`load_rwku` / :func:`synthetic_rwku`).
        n_forget: the first ``n_forget`` targets are forgotten (≥ 1, < number of targets unless neighbours exist).
        seed: choice of IdK phrases.  with_idk: give items an IdK answer (IdkPO / IdkDPO).

    Raises:
        ConfigError: ``n_forget`` out of range.  DataError: empty forget set or retain set.
    """
    from unlearnkit.data.text.synthetic import _IDK

    if not 1 <= n_forget <= len(targets):
        raise ConfigError(f"rwku: n_forget must be in [1, {len(targets)}] (targets loaded), got {n_forget}")

    def idk(i: int) -> str | None:
        return _IDK[(i * 7 + seed) % len(_IDK)] if with_idk else None

    forget_names = [t.name for t in targets[:n_forget]]
    train, forget_items, evals, types = [], [], {v: [] for v in EVAL_SETS.values()}, {}
    for ti, t in enumerate(targets):
        is_forget = ti < n_forget
        for (kind, level), probes in t.probes.items():
            block = _BLOCKS[(kind, level)]
            subj = t.name if kind == "forget" else f"{t.name} (neighbour)"
            for r, p in enumerate(probes):
                sid = ti * ID_STRIDE + block * BLOCK + r
                it = QAItem(sid, probe_question(p), p.answer, subject=subj, idk_answer=idk(sid))
                if level == 3:
                    types[sid] = p.type
                else:
                    train.append(it)
                    if is_forget and kind == "forget":
                        forget_items.append(it)
                if is_forget:  # RWKU evaluates the forgotten targets and their neighbours
                    evals[EVAL_SETS[(kind, level)]].append(QAItem(sid, p.query, p.answer, subject=subj,
                                                                  idk_answer=idk(sid)))
    full = QASet("full", train, f"{source}({len(targets)} targets)")
    forget = QASet("forget", forget_items, full.source)
    retain = full.exclude_ids(forget.ids, "retain")
    if len(forget) == 0:
        raise DataError(f"rwku: the forget targets {forget_names} have no level-1/2 probes to forget")
    if len(retain) == 0:
        raise DataError("rwku: nothing to retain (no neighbour probes and no other target); load more targets")
    check_split(full, forget, retain, f"RWKU ({source})")
    eval_sets = {name: QASet(name, items, full.source) for name, items in evals.items() if items}
    eval_sets["forget"] = forget.select_ids([it.id for it in forget if (it.id % ID_STRIDE) // BLOCK == 2] or
                                            forget.ids, "forget")
    nb = [it for it in retain if (it.id % ID_STRIDE) // BLOCK == 5]
    eval_sets["retain"] = QASet("retain", nb or list(retain)[:40], full.source)
    scenario = {"kind": "rwku", "split": f"{n_forget} target(s)", "source": source, "seed": seed,
                "n_forget": len(forget), "n_retain": len(retain), "n_test": 0, "subjects_forget": forget_names,
                "targets": [t.name for t in targets]}
    extras = {"rwku": {"targets_forget": forget_names, "targets": [t.name for t in targets], "l3_types": types,
                       "intros": {t.name: t.intro for t in targets}}}
    return TextTask(source, full, forget, retain, eval_sets, scenario, extras)


def target_prompts(targets: list[str], questions: tuple[str, ...] = TARGET_QUESTIONS) -> list[tuple[str, str]]:
    """``(target, question)`` pairs the target-only setting asks the model (its answers become the forget corpus)."""
    if not targets:
        raise DataError("the target-only setting needs at least one target name")
    return [(t, q.format(t=t)) for t in targets for q in questions]


def target_corpus(targets: list[str], answers: list[str], *, questions: tuple[str, ...] = TARGET_QUESTIONS,
                  seed: int = 0) -> QASet:
    """The target-only forget corpus: each question of :func:`target_prompts` with the model's own answer.

    Args:
        targets: target names.  answers: the model's answers, one per ``target_prompts(targets, questions)`` pair.

    Raises:
        DataError: a wrong number of answers, or every answer empty.
    """
    from unlearnkit.data.text.synthetic import _IDK

    pairs = target_prompts(targets, questions)
    if len(answers) != len(pairs):
        raise DataError(f"target corpus: {len(answers)} answers for {len(pairs)} questions")
    items = [QAItem(TARGET_CORPUS_ID0 + i, q, a.strip(), subject=t, idk_answer=_IDK[(i + seed) % len(_IDK)])
             for i, ((t, q), a) in enumerate(zip(pairs, answers)) if a.strip()]
    if not items:
        raise DataError(f"the model answered nothing about the targets {targets}; it cannot build its own forget "
                        "corpus (does it know them? see unlearnkit.data.text.synthetic.known_targets)")
    return QASet("forget", items, "target-only corpus (model-generated)")


__all__ = ["EVAL_SETS", "FILL_BLANK_PROMPT", "QA_PROMPT", "RWKUProbe", "RWKUTarget", "TARGET_QUESTIONS",
           "build_rwku_task", "load_rwku", "probe_question", "synthetic_rwku", "target_corpus", "target_prompts",
           "write_rwku_layout"]
