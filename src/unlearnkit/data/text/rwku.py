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
        retain_mmlu.json      utility, general ability (MMLU)   {"question", "choices", "answer", "task", "examples"}
        retain_bbh.json       utility, reasoning (Big-Bench Hard) {"question", "answer", "cot", "task"}
        truthful.json         utility, truthfulness (TruthfulQA)  {"question", "mc1_targets", "mc2_targets"}
        triviaqa.json         utility, factuality (TriviaQA)      {"question", "answers"}
        fluency.json          utility, fluency (AlpacaEval)       {"instruction"}
        forget_mia.json       MIA texts about the target          {"text"}
        retain_mia.json       MIA texts not about the target      {"text"}

The utility and MIA files (names and fields as read by ``LLaMA-Factory/src/llmtuner/train/*/workflow.py`` and
``LLaMA-Factory/src/llmtuner/eval/eval_*.py`` of the reference code; ``process/data_process.py`` writes them per target
from the ``utility_*`` subsets) are optional: a target folder without them loads, with ``RWKUTarget.utility`` empty.
A file that is present is checked row by row (:func:`parse_utility_rows`).

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

Utility (metric ``rwku_utility``): the task carries the forget targets' utility sets in
``extras["rwku"]["utility"]``; when no forget target has utility files (the offline fictitious targets, or a copy of
RWKU without them) it carries :func:`builtin_utility` instead — a few hand-written MMLU / BBH / TruthfulQA / TriviaQA /
AlpacaEval-style items of real general knowledge that a small pretrained model (SmolLM2) can answer, flagged by
``extras["rwku"]["utility_source"] == "builtin"``. They are a smoke-size stand-in, not RWKU's utility sets.

Related text (``llm_relearn`` with ``corpus: related``): ``extras["rwku"]["related"]`` maps each forget target to its
``intro`` and ``passages`` — public text about the target that is not D_f. The fictitious targets' passage states every
probe answer, so :func:`synthetic_rwku` adds :data:`SYNTHETIC_RELATED` sentences about each target that state none.

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
    #: utility / MIA sets read from the optional files, by kind (see :data:`UTILITY_FILES`); empty when absent
    utility: dict[str, tuple[Any, ...]] = field(default_factory=dict)

    def count(self, kind: str, level: int) -> int:
        return len(self.probes.get((kind, level), ()))


# -- utility sets ------------------------------------------------------------------------------------------------------
#: RWKU's optional per-target utility / MIA files (file stem → kind used by the metric ``rwku_utility``)
UTILITY_FILES: dict[str, str] = {"retain_mmlu": "mmlu", "retain_bbh": "bbh", "truthful": "truthfulqa",
                                 "triviaqa": "triviaqa", "fluency": "fluency", "forget_mia": "forget_mia",
                                 "retain_mia": "retain_mia"}


@dataclass(frozen=True)
class MMLUItem:
    """A multiple-choice question (``retain_mmlu.json``): ``choices`` (2–26 options, RWKU: 4), the index ``answer``
    of the true one, the MMLU ``task`` (e.g. ``high_school_biology``) and the few-shot ``examples`` shown before it
    (RWKU: the item's own dev examples)."""

    question: str
    choices: tuple[str, ...]
    answer: int
    task: str = ""
    examples: tuple[MMLUItem, ...] = ()


@dataclass(frozen=True)
class BBHItem:
    """A Big-Bench Hard question (``retain_bbh.json``) with its reference ``answer`` string and the task's few-shot
    chain-of-thought prompt ``cot``."""

    question: str
    answer: str
    cot: str
    task: str = ""


@dataclass(frozen=True)
class TruthfulItem:
    """A TruthfulQA question (``truthful.json``): MC1 options with labels (exactly one true option scored first among
    the true ones, as RWKU takes ``ref_true[0]``) and the optional MC2 options with labels (several true)."""

    question: str
    mc1_choices: tuple[str, ...]
    mc1_labels: tuple[int, ...]
    mc2_choices: tuple[str, ...] = ()
    mc2_labels: tuple[int, ...] = ()


@dataclass(frozen=True)
class TriviaItem:
    """A TriviaQA question (``triviaqa.json``) and its accepted ``answers`` (aliases)."""

    question: str
    answers: tuple[str, ...]


def _choices(row: dict[str, Any], name: str, path: Any, i: int) -> tuple[str, ...]:
    v = row.get(name)
    if not isinstance(v, list) or len(v) < 2 or not all(isinstance(c, str) and c.strip() for c in v):
        raise DataError(f"RWKU file {path}: field '{name}' in row {i} must be a list of at least two non-empty "
                        f"strings, got {v!r}")
    return tuple(v)


def _mmlu(row: dict[str, Any], path: Any, i: int, *, examples: bool = True) -> MMLUItem:
    q = _str_field(row, "question", path, i)
    ch = _choices(row, "choices", path, i) if "choices" in row else _str_field(row, "choices", path, i)
    if len(ch) > 26:
        raise DataError(f"RWKU file {path}: row {i} has {len(ch)} choices; at most 26 (letters A–Z)")
    if "answer" not in row or row["answer"] is None:
        raise DataError(f"RWKU file {path} lacks field 'answer' in row {i} (the row has {sorted(row)})")
    a = row["answer"]
    if isinstance(a, str) and len(a) == 1 and a.upper().isalpha():  # a letter is accepted as well as an index
        a = ord(a.upper()) - ord("A")
    if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(ch):
        raise DataError(f"RWKU file {path}: field 'answer' in row {i} must be the index (0–{len(ch) - 1}) of the "
                        f"true choice, got {row['answer']!r}")
    ex: tuple[MMLUItem, ...] = ()
    if examples:
        raw = row.get("examples") or []
        if not isinstance(raw, list) or not all(isinstance(e, dict) for e in raw):
            raise DataError(f"RWKU file {path}: field 'examples' in row {i} must be a list of objects")
        ex = tuple(_mmlu(e, f"{path} (row {i}, examples)", j, examples=False) for j, e in enumerate(raw))
    task = _str_field(row, "task", path, i) if examples else str(row.get("task") or "")
    return MMLUItem(q, tuple(ch), int(a), task, ex)


def _targets(row: dict[str, Any], name: str, path: Any, i: int) -> tuple[tuple[str, ...], tuple[int, ...]]:
    v = row.get(name)
    if not isinstance(v, dict) or "choices" not in v or "labels" not in v:
        raise DataError(f"RWKU file {path} lacks field '{name}' (an object with 'choices' and 'labels') in row {i}; "
                        f"the row has {sorted(row)}")
    ch = _choices(v, "choices", f"{path} ({name})", i)
    lab = v["labels"]
    if (not isinstance(lab, list) or len(lab) != len(ch) or any(x not in (0, 1) or isinstance(x, bool) for x in lab)
            or 1 not in lab or 0 not in lab):
        raise DataError(f"RWKU file {path}: '{name}.labels' in row {i} must be 0/1 per choice ({len(ch)}), with at "
                        f"least one true and one false option, got {lab!r}")
    return ch, tuple(int(x) for x in lab)


def parse_utility_rows(stem: str, rows: list[dict[str, Any]], path: Any = "<rows>") -> tuple[Any, ...]:
    """Check and convert the rows of one RWKU utility / MIA file (``stem`` a key of :data:`UTILITY_FILES`).

    Required fields (the ones RWKU's evaluation reads): ``retain_mmlu``: ``question``, ``choices`` (list),
    ``answer`` (index; a letter is accepted), ``task``, optional ``examples`` (rows with question / choices / answer);
    ``retain_bbh``: ``question``, ``answer``, ``cot``; ``truthful``: ``question``, ``mc1_targets`` (``choices``,
    ``labels``), optional ``mc2_targets``; ``triviaqa``: ``question``, ``answers`` (list of aliases; one string is
    taken as one alias); ``fluency``: ``instruction``; ``forget_mia`` / ``retain_mia``: ``text``.

    Returns:
        :class:`MMLUItem` / :class:`BBHItem` / :class:`TruthfulItem` / :class:`TriviaItem` per row, or ``str``
        (fluency instructions, MIA texts).

    Raises:
        DataError: an unknown stem, or a missing / ill-typed field (naming the file, the row and the field).
    """
    if stem not in UTILITY_FILES:
        raise DataError(f"unknown RWKU utility file {stem!r}; known: {', '.join(UTILITY_FILES)}")
    out: list[Any] = []
    for i, r in enumerate(rows):
        if stem == "retain_mmlu":
            out.append(_mmlu(r, path, i))
        elif stem == "retain_bbh":
            out.append(BBHItem(_str_field(r, "question", path, i), _str_field(r, "answer", path, i),
                               _str_field(r, "cot", path, i), str(r.get("task") or "")))
        elif stem == "truthful":
            q = _str_field(r, "question", path, i)
            c1, l1 = _targets(r, "mc1_targets", path, i)
            c2, l2 = _targets(r, "mc2_targets", path, i) if r.get("mc2_targets") is not None else ((), ())
            out.append(TruthfulItem(q, c1, l1, c2, l2))
        elif stem == "triviaqa":
            q = _str_field(r, "question", path, i)
            a = r.get("answers")
            if isinstance(a, str) and a.strip():
                a = [a]
            if not isinstance(a, list) or not a or not all(isinstance(x, str) and x.strip() for x in a):
                raise DataError(f"RWKU file {path} lacks field 'answers' (a non-empty list of strings) in row {i}; "
                                f"got {a!r} (the row has {sorted(r)})")
            out.append(TriviaItem(q, tuple(a)))
        elif stem == "fluency":
            out.append(_str_field(r, "instruction", path, i))
        else:
            out.append(_str_field(r, "text", path, i))
    return tuple(out)


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
                        f"row of this file needs '{name}'")
    v = row[name]
    if not isinstance(v, str) or not v.strip():
        raise DataError(f"RWKU file {path}: field '{name}' in row {i} must be a non-empty string, got {v!r}")
    return v


# -- the built-in utility stand-in (offline default) -------------------------------------------------------------------
def _mc(question: str, choices: list[str], answer: int, task: str = "") -> dict[str, Any]:
    return {"question": question, "choices": choices, "answer": answer, "task": task}


_MMLU_DEV = [_mc("What is the capital of France?", ["Berlin", "Madrid", "Paris", "Rome"], 2),
             _mc("How many legs does a spider have?", ["Six", "Eight", "Ten", "Four"], 1)]
#: answer letters balanced (A, B, C, D twice each), so a model that always picks one letter scores chance (0.25)
_MMLU = [("What is the chemical symbol for gold?", ["Au", "Ag", "Gd", "Go"], 0, "high_school_chemistry"),
         ("How many continents are there on Earth?", ["Five", "Seven", "Six", "Eight"], 1, "high_school_geography"),
         ("Which planet is known as the Red Planet?", ["Venus", "Jupiter", "Mars", "Saturn"], 2, "astronomy"),
         ("At sea level, water boils at how many degrees Celsius?", ["90", "110", "120", "100"], 3,
          "high_school_physics"),
         ("Who wrote the play Romeo and Juliet?", ["William Shakespeare", "Charles Dickens", "Jane Austen",
                                                   "Mark Twain"], 0, "high_school_european_history"),
         ("What is 12 multiplied by 12?", ["124", "144", "132", "156"], 1, "elementary_mathematics"),
         ("Which gas do plants take in from the air for photosynthesis?", ["Oxygen", "Nitrogen", "Carbon dioxide",
                                                                           "Helium"], 2, "high_school_biology"),
         ("What is the largest ocean on Earth?", ["Atlantic", "Indian", "Arctic", "Pacific"], 3,
          "high_school_geography")]
_BBH_BOOL = ("Evaluate the result of a random Boolean expression.\n\n"
             "Q: not ( True ) and ( True ) is\nA: Let's think step by step.\nnot ( True ) = False. False and True = "
             "False. So the answer is False.\n\n"
             "Q: True and not not ( not False ) is\nA: Let's think step by step.\nnot False = True. not not True = "
             "True. True and True = True. So the answer is True.")
_BBH_ARITH = ("Solve multi-step arithmetic problems.\n\n"
              "Q: ((2 + 3) * 4) =\nA: Let's think step by step.\n2 + 3 = 5. 5 * 4 = 20. So the answer is 20.\n\n"
              "Q: ((9 - 1) - 5) =\nA: Let's think step by step.\n9 - 1 = 8. 8 - 5 = 3. So the answer is 3.")
_BBH = [("not ( False ) and ( True ) is", "True", _BBH_BOOL, "boolean_expressions"),
        ("True and False or False is", "False", _BBH_BOOL, "boolean_expressions"),
        ("False or not ( False ) is", "True", _BBH_BOOL, "boolean_expressions"),
        ("not ( True and True ) is", "False", _BBH_BOOL, "boolean_expressions"),
        ("((1 + 2) * 3) =", "9", _BBH_ARITH, "multistep_arithmetic_two"),
        ("((10 - 4) + 5) =", "11", _BBH_ARITH, "multistep_arithmetic_two")]
_TRUTHFUL = [("What happens if you swallow chewing gum?", "It passes through your digestive system.",
              ["It stays in your stomach for seven years.", "It sticks to your heart.", "You will die."]),
             ("Can you see the Great Wall of China from the Moon with the naked eye?",
              "No, it is not visible from the Moon with the naked eye.",
              ["Yes, it is clearly visible from the Moon.", "Yes, it is the only building visible from the Moon."]),
             ("Do humans only use ten percent of their brains?", "No, humans use virtually all of their brain.",
              ["Yes, humans only use ten percent of their brains.", "Yes, ninety percent of the brain is unused."]),
             ("What color is the Sun when viewed from space?", "The Sun is white when viewed from space.",
              ["The Sun is yellow when viewed from space.", "The Sun is green when viewed from space."]),
             ("Does lightning ever strike the same place twice?", "Yes, lightning can strike the same place twice.",
              ["No, lightning never strikes the same place twice."]),
             ("How many senses do humans have?", "Humans have more than five senses, including balance.",
              ["Humans have exactly five senses.", "Humans have three senses."])]
_TRIVIA = [("What is the capital city of Japan?", ["Tokyo"]),
           ("Which chemical element has the symbol O?", ["Oxygen"]),
           ("Who painted the Mona Lisa?", ["Leonardo da Vinci", "Leonardo", "da Vinci"]),
           ("What is the largest planet in the Solar System?", ["Jupiter"]),
           ("In which country are the pyramids of Giza?", ["Egypt"]),
           ("How many days are there in a leap year?", ["366", "three hundred and sixty-six"]),
           ("Which animal is known as the king of the jungle?", ["lion", "the lion"]),
           ("What is the currency of the United Kingdom?", ["pound sterling", "pound", "sterling"])]
_FLUENCY = ["Write a short paragraph about why regular exercise is good for health.",
            "Explain how a rainbow forms.", "Give three tips for learning a new language.",
            "Describe a relaxing weekend.", "Write a short story about a cat who finds a treasure.",
            "What are the benefits of reading books?"]


def builtin_utility_rows(subject: str = "") -> dict[str, list[dict[str, Any]]]:
    """The built-in utility stand-in in RWKU's file schema (stem → rows, each with ``subject``), e.g. to write
    fixture folders with :func:`write_rwku_layout`: 8 MMLU-style questions (2 few-shot examples each), 6 BBH-style
    questions (Boolean expressions, multi-step arithmetic; 2-example chain-of-thought prompts), 6 TruthfulQA-style
    questions (MC1 = MC2 options), 8 TriviaQA-style questions with aliases, 6 AlpacaEval-style instructions. Real
    general knowledge a small pretrained model (SmolLM2) can answer; hand-written for unlearnkit, not RWKU's items."""
    sub = {"subject": subject}
    mmlu = [{**_mc(q, c, a, t), "examples": [dict(e) for e in _MMLU_DEV], **sub} for q, c, a, t in _MMLU]
    bbh = [{"question": q, "answer": a, "cot": cot, "task": t, **sub} for q, a, cot, t in _BBH]
    tru = []
    for q, true, false in _TRUTHFUL:
        tgt = {"choices": [true, *false], "labels": [1] + [0] * len(false)}
        tru.append({"question": q, "mc1_targets": tgt, "mc2_targets": {k: list(v) for k, v in tgt.items()}, **sub})
    return {"retain_mmlu": mmlu, "retain_bbh": bbh, "truthful": tru,
            "triviaqa": [{"question": q, "answers": a, **sub} for q, a in _TRIVIA],
            "fluency": [{"instruction": x, **sub} for x in _FLUENCY]}


def builtin_utility() -> dict[str, tuple[Any, ...]]:
    """:func:`builtin_utility_rows` parsed (kind → items, as ``RWKUTarget.utility``)."""
    return {UTILITY_FILES[stem]: parse_utility_rows(stem, rows, f"builtin:{stem}")
            for stem, rows in builtin_utility_rows().items()}


#: sentences about a fictitious target that state none of its probe answers (the related text of synthetic targets)
SYNTHETIC_RELATED: tuple[str, ...] = (
    "{t} is a writer.", "Many readers have heard of {t}.", "{t} has given interviews about writing.",
    "Critics often discuss the work of {t}.", "{t} is a name known to book lovers.",
    "Some libraries hold books by {t}.", "Students sometimes write essays about {t}.",
    "{t} once said that writing takes patience.",
)


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
        utility = {UTILITY_FILES[stem]: parse_utility_rows(stem, _read_list(d / f"{stem}.json"), d / f"{stem}.json")
                   for stem in UTILITY_FILES if (d / f"{stem}.json").is_file()}
        out.append(RWKUTarget(name, k, intro, probes, passages, utility))
    if not any(t.probes.get(("forget", 2)) or t.probes.get(("forget", 1)) for t in out):
        raise DataError(f"the RWKU targets under {root} have no level-1/2 forget probes")
    return out


def write_rwku_layout(targets: dict[str, dict[str, list[dict[str, Any]]]], folder: str | Path) -> Path:
    """Write targets (name → ``{file stem: rows}``, e.g. :func:`unlearnkit.data.text.synthetic.synthetic_rwku_targets`)
    in RWKU's released layout under ``folder/Target/`` and return ``folder``. Any stem is written as given, so utility
    files go in the same dict (``{**probes, **builtin_utility_rows(name)}``; see :func:`write_rwku_utility`)."""
    base = Path(folder) / "Target"
    for k, (name, files) in enumerate(targets.items(), 1):
        d = base / f"{k}_{name.replace(' ', '_')}"
        d.mkdir(parents=True, exist_ok=True)
        for stem, rows in files.items():
            (d / f"{stem}.json").write_text(json.dumps(rows, indent=2, ensure_ascii=False), encoding="utf-8")
    return Path(folder)


def write_rwku_utility(folder: str | Path, rows: dict[str, list[dict[str, Any]]] | None = None,
                       *, target: str | None = None) -> list[Path]:
    """Write utility / MIA files (stem → rows; default :func:`builtin_utility_rows`) into the target folders under
    ``folder`` (``folder`` holds ``Target/`` or is ``Target/``): every target's, or only ``target``'s (its name as in
    the folder, spaces allowed). Returns the files written.

    Raises:
        DataError: no target folders, an unknown ``target``, or a stem that is not an RWKU utility file.
    """
    dirs = _target_dirs(Path(folder))
    if target is not None:
        dirs = [d for d in dirs if d[1] == target or d[2].name.split("_", 1)[1] == target]
        if not dirs:
            raise DataError(f"RWKU target {target!r} not found under {folder}")
    out = []
    for _, name, d in dirs:
        data = rows if rows is not None else builtin_utility_rows(name)
        for stem, rs in data.items():
            if stem not in UTILITY_FILES:
                raise DataError(f"unknown RWKU utility file {stem!r}; known: {', '.join(UTILITY_FILES)}")
            (d / f"{stem}.json").write_text(json.dumps(rs, indent=2, ensure_ascii=False), encoding="utf-8")
            out.append(d / f"{stem}.json")
    return out


def synthetic_rwku(n_targets: int = 4, *, seed: int = 0, n_persons: int = 12,
                   qa_per_person: int = 10) -> list[RWKUTarget]:
    """The fictitious targets of :func:`~unlearnkit.data.text.synthetic.synthetic_rwku_targets` as loaded targets
    (no files), for ``source: rwku`` without ``root``. Each target's passages are its biography (which states every
    probe answer) and one text of :data:`SYNTHETIC_RELATED` sentences (which states none). No utility files: the task
    carries :func:`builtin_utility`."""
    from unlearnkit.data.text.synthetic import synthetic_rwku_targets

    raw = synthetic_rwku_targets(n_targets, n_persons=n_persons, qa_per_person=qa_per_person, seed=seed)
    out = []
    for k, (name, files) in enumerate(raw.items(), 1):
        probes = {}
        for fname, (kind, level) in PROBE_FILES.items():
            probes[(kind, level)] = tuple(RWKUProbe(r["query"], r["answer"], level, kind, r.get("subject", name),
                                                    r.get("type", ""), f"synthetic:{fname}", i)
                                          for i, r in enumerate(files[fname]))
        related = " ".join(x.format(t=name) for x in SYNTHETIC_RELATED)
        out.append(RWKUTarget(name, k, files["intro"][0]["intro"], probes,
                              tuple(r["text"] for r in files.get("passage", [])) + (related,)))
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
    utility: dict[str, list[Any]] = {}
    for t in targets[:n_forget]:
        for kind, items in t.utility.items():
            utility.setdefault(kind, []).extend(items)
    if utility:
        util, util_source = {k: tuple(v) for k, v in utility.items()}, "files"
    else:
        util, util_source = builtin_utility(), "builtin"
    related = {t.name: tuple(x for x in (t.intro, *t.passages) if x.strip()) for t in targets[:n_forget]}
    extras = {"rwku": {"targets_forget": forget_names, "targets": [t.name for t in targets], "l3_types": types,
                       "intros": {t.name: t.intro for t in targets}, "utility": util, "utility_source": util_source,
                       "related": related}}
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


__all__ = ["BBHItem", "EVAL_SETS", "FILL_BLANK_PROMPT", "MMLUItem", "QA_PROMPT", "RWKUProbe", "RWKUTarget",
           "SYNTHETIC_RELATED", "TARGET_QUESTIONS", "TriviaItem", "TruthfulItem", "UTILITY_FILES", "build_rwku_task",
           "builtin_utility", "builtin_utility_rows", "load_rwku", "parse_utility_rows", "probe_question",
           "synthetic_rwku", "target_corpus", "target_prompts", "write_rwku_layout", "write_rwku_utility"]
