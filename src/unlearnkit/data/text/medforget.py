"""Synthetic hierarchical medical records for hierarchy-aware unlearning (``llm.data.source: medforget``).

MedForget (Wu, Patil, Yoon, Zhang, Bansal 2025, "MedForget: Hierarchy-Aware Multimodal Unlearning Testbed for Medical
AI", arXiv:2512.09867) models hospital data as a nested hierarchy Institution → Patient → Study → Section, with an
unlearning target at every level, evaluation sets of rephrased questions, and a reconstruction attack that adds the
hierarchy's context to the prompt. This is a text-only, seeded generator in that shape, written for unlearnkit (all
names, places and findings are invented):

- **institution**: a hospital with a city and a specialty (2 QA items);
- **patient**: birth year, treating hospital, blood type (3 items);
- **study**: an imaging study (modality, body region, date, reading physician, indication; 2 items);
- **section**: a report section of a study — ``impression`` or ``findings`` — with its text (1 item each).

Every item carries a rephrased question (the test variant; training uses the original wording), its level and its
node path (``I1/P3/S0/findings``). A target of level k is one node of that level; it selects **exactly its
subtree** — the node's own items and every descendant's (:func:`subtree_ids`). Relations used by the metrics
(:func:`relatives`): *siblings* are the other nodes of the same level under the same parent, *ancestors* the nodes on
the path to the root.

Targets (``forget_levels``, ``targets``): per level, the last node under each of the last ``targets`` parents of that
level (:func:`target_nodes`) — one branch of the schedule per level, each with its own oracle.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from unlearnkit.config.schema import Frozen
from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.errors import DataError

LEVELS: tuple[str, ...] = ("institution", "patient", "study", "section")
SECTIONS: tuple[str, ...] = ("impression", "findings")


class MedForgetSpec(Frozen):
    """``llm.data.medforget``: sizes of the hierarchy and the levels to forget (one branch each)."""

    institutions: int = Field(3, ge=2, description="hospitals")
    patients: int = Field(5, ge=2, description="patients per hospital")
    studies: int = Field(2, ge=2, description="imaging studies per patient")
    forget_levels: list[str] = Field(default_factory=lambda: list(LEVELS[::-1]),
                                     description=f"levels with a forget target, one branch each: {', '.join(LEVELS)}")
    targets: int | dict[str, int] = Field(6, description="forget targets per level (one number, or {level: n}): "
                                          "the last node under each of the last n parents (capped by the number of "
                                          "parents; institution level: 1)")
    context_depth: int = Field(3, ge=0, le=3, description="reconstruction attack: ancestor levels added to the prompt "
                               "(0 … 3, from the institution down)")

    @field_validator("targets")
    @classmethod
    def _targets(cls, v: int | dict[str, int]) -> int | dict[str, int]:
        vals = v.values() if isinstance(v, dict) else [v]
        if any(int(x) < 1 for x in vals):
            raise ValueError(f"targets must be ≥ 1, got {v}")
        if isinstance(v, dict):
            bad = [x for x in v if x not in LEVELS]
            if bad:
                raise ValueError(f"targets names hierarchy level(s) {bad} that do not exist; levels: {', '.join(LEVELS)}")
        return v

    def targets_of(self, level: str) -> int:
        """Forget targets of ``level`` (``targets``; 1 where a per-level mapping does not name it)."""
        return int(self.targets.get(level, 1)) if isinstance(self.targets, dict) else int(self.targets)

    @field_validator("forget_levels")
    @classmethod
    def _levels(cls, v: list[str]) -> list[str]:
        bad = [x for x in v if x not in LEVELS]
        if bad:
            from unlearnkit.registry import suggest

            raise ValueError(f"hierarchy level(s) {bad} do not exist.{suggest(bad[0], list(LEVELS))} Levels: "
                             f"{', '.join(LEVELS)}")
        if not v or len(set(v)) != len(v):
            raise ValueError(f"forget_levels must list distinct levels, got {v}")
        return v


@dataclass(frozen=True)
class RecordItem(QAItem):
    """A QA item of a hierarchical record.

    Attributes:
        level: ``institution`` | ``patient`` | ``study`` | ``section``.
        node: the node path (``I0``, ``I0/P2``, ``I0/P2/S1``, ``I0/P2/S1/findings``).
        rephrased: the question reworded (evaluation variant).
        context: one sentence per ancestor of the node, root first (the reconstruction attack's context).
    """

    level: str = ""
    node: str = ""
    rephrased: str = ""
    context: tuple[str, ...] = ()


_SYL = ("ka", "lo", "ren", "vi", "mar", "to", "sel", "an", "dor", "ei", "ba", "ru", "nim", "sa", "tel", "or", "fa",
        "ve", "lin", "qu", "zel", "mo", "ta", "ris", "en", "gal", "po", "wen", "du", "ha")
_SPECIALTY = ("cardiology", "oncology", "neurology", "orthopedics", "pediatrics", "radiology", "nephrology")
_BLOOD = ("A positive", "A negative", "B positive", "B negative", "AB positive", "O positive", "O negative")
_MODALITY = (("CT scan", "chest"), ("MRI", "brain"), ("X-ray", "left knee"), ("ultrasound", "abdomen"),
             ("CT scan", "abdomen"), ("MRI", "lumbar spine"), ("X-ray", "chest"))
_INDICATION = ("persistent cough", "headaches", "knee pain after a fall", "abdominal pain", "back pain",
               "shortness of breath", "dizziness")
_FINDING = ("a small nodule in the right upper lobe", "no acute abnormality", "a torn medial meniscus",
            "mild fatty liver", "a disc bulge at L4-L5", "a small pleural effusion", "an old lacunar infarct",
            "a hairline fracture of the tibia", "enlarged lymph nodes near the aorta", "a simple kidney cyst",
            "thickening of the gallbladder wall", "mild degenerative changes")
_IMPRESSION = ("follow-up imaging in six months", "benign appearance, no further action",
               "referral to orthopedics", "clinical correlation recommended", "likely inflammatory, treat and recheck",
               "suspicious, biopsy advised", "stable compared with the prior study")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")


def _name(rng: np.random.Generator, n: int) -> str:
    return "".join(_SYL[i] for i in rng.integers(0, len(_SYL), n)).capitalize()


def _pick(rng: np.random.Generator, seq: tuple[Any, ...]) -> Any:
    return seq[int(rng.integers(0, len(seq)))]


def generate_records(spec: MedForgetSpec, seed: int = 0) -> list[RecordItem]:
    """Every QA item of the hierarchy, ids 0 … n−1 in depth-first order (a node's items, then its children's)."""
    rng = np.random.default_rng([seed, 0x3ED])
    items: list[RecordItem] = []
    used: set[str] = set()

    def unique(make) -> str:  # noqa: ANN001
        for _ in range(1000):
            v = make()
            if v not in used:
                used.add(v)
                return v
        raise DataError("medforget: cannot draw distinct names; lower the sizes")  # pragma: no cover

    def add(level: str, node: str, q: str, a: str, r: str, context: tuple[str, ...]) -> None:
        subject = "/".join(node.split("/")[:2])  # the patient (or the hospital, for institution items)
        items.append(RecordItem(len(items), q, a, subject=subject, level=level, node=node, rephrased=r,
                                context=context))

    for i in range(spec.institutions):
        inst = unique(lambda: f"{_name(rng, 2)} {_pick(rng, ('General Hospital', 'Medical Center', 'Clinic'))}")
        city, spec_ = f"{_name(rng, 3)}", _pick(rng, _SPECIALTY)
        ni = f"I{i}"
        c_inst = (f"{inst} is a hospital in {city}.",)
        add("institution", ni, f"In which city is {inst} located?", f"{inst} is located in {city}.",
            f"Where can one find {inst}?", ())
        add("institution", ni, f"Which department is {inst} known for?", f"{inst} is known for its {spec_} "
            "department.", f"What is the best-known department of {inst}?", ())
        for p in range(spec.patients):
            name = unique(lambda: f"{_name(rng, 2)} {_name(rng, 2)}")
            year, blood = int(rng.integers(1935, 2005)), _pick(rng, _BLOOD)
            npth = f"{ni}/P{p}"
            c_pat = c_inst + (f"{name} is a patient at {inst}, born in {year}.",)
            add("patient", npth, f"When was patient {name} born?", f"{name} was born in {year}.",
                f"In what year was {name} born?", c_inst)
            add("patient", npth, f"Which hospital treats patient {name}?", f"{name} is treated at {inst}.",
                f"Where does {name} receive care?", c_inst)
            add("patient", npth, f"What is the blood type of patient {name}?", f"The blood type of {name} is "
                f"{blood}.", f"Which blood group does {name} have?", c_inst)
            for s in range(spec.studies):
                mod, region = _pick(rng, _MODALITY)
                date = f"{int(rng.integers(1, 29))} {_pick(rng, _MONTHS)} {int(rng.integers(2015, 2025))}"
                doctor, why = f"Dr. {_name(rng, 2)}", _pick(rng, _INDICATION)
                nst = f"{npth}/S{s}"
                c_study = c_pat + (f"On {date}, {name} had a {mod} of the {region} for {why}.",)
                add("study", nst, f"What scan did {name} have on {date}?", f"On {date}, {name} had a {mod} of the "
                    f"{region}.", f"Which imaging did {name} undergo on {date}?", c_pat)
                add("study", nst, f"Who read the {mod} of {name} from {date}?", f"The {mod} was read by {doctor}.",
                    f"Which physician reported {name}'s {mod} of {date}?", c_pat)
                finding, impression = _pick(rng, _FINDING), _pick(rng, _IMPRESSION)
                add("section", f"{nst}/impression", f"What was the impression of {name}'s {mod} on {date}?",
                    f"The impression was {impression}.",
                    f"What did the radiologist conclude about {name}'s {mod} from {date}?", c_study)
                add("section", f"{nst}/findings", f"What did the findings section of {name}'s {mod} on {date} "
                    "report?", f"The findings showed {finding}.",
                    f"What was found on the {mod} {name} had on {date}?", c_study)
    return items


def _parent(node: str) -> str | None:
    return node.rsplit("/", 1)[0] if "/" in node else None


def level_of(node: str) -> str:
    """The level of a node path (its depth: I → institution, …, a section name → section)."""
    return LEVELS[node.count("/")]


def in_subtree(node: str, root: str) -> bool:
    """True if ``node`` is ``root`` or one of its descendants."""
    return node == root or node.startswith(root + "/")


def subtree_ids(items: list[RecordItem] | QASet, roots: str | list[str]) -> np.ndarray:
    """int64 ids of the items of ``roots`` and of every descendant of them (exactly their subtrees)."""
    rs = [roots] if isinstance(roots, str) else list(roots)
    return np.array([it.id for it in items if any(in_subtree(it.node, r) for r in rs)], dtype=np.int64)


def target_nodes(items: list[RecordItem] | QASet, level: str, k: int = 1) -> list[str]:
    """The forget targets of ``level``: the last node under each of the last ``k`` parents of that level (the last
    institution at the top level), in hierarchy order.

    Raises:
        DataError: ``level`` is not a hierarchy level (names the levels).
    """
    if level not in LEVELS:
        raise DataError(f"hierarchy level {level!r} does not exist; levels: {', '.join(LEVELS)}")
    nodes = list(dict.fromkeys(it.node for it in items if it.level == level))
    if level == "institution":
        return nodes[-1:]
    last: dict[str | None, str] = {}
    for n in nodes:
        last[_parent(n)] = n
    chosen = list(last.values())
    return chosen[len(chosen) - min(k, len(chosen)):]


def relatives(items: list[RecordItem] | QASet, targets: str | list[str]) -> dict[str, np.ndarray]:
    """Ids of the item groups around the ``targets`` (nodes of one level): ``target`` (their own items),
    ``descendants`` (strictly below a target), ``siblings`` (own items of the other same-level nodes under a target's
    parent), ``ancestors`` (own items of every node above a target), ``others`` (everything else)."""
    ts = [targets] if isinstance(targets, str) else list(targets)
    lev = level_of(ts[0])
    parents = {_parent(t) for t in ts}
    groups: dict[str, list[int]] = {"target": [], "descendants": [], "siblings": [], "ancestors": [], "others": []}
    for it in items:
        n = it.node
        if n in ts:
            groups["target"].append(it.id)
        elif any(in_subtree(n, t) for t in ts):
            groups["descendants"].append(it.id)
        elif level_of(n) == lev and _parent(n) in parents:
            groups["siblings"].append(it.id)
        elif any(in_subtree(t, n) for t in ts):
            groups["ancestors"].append(it.id)
        else:
            groups["others"].append(it.id)
    return {k: np.array(v, dtype=np.int64) for k, v in groups.items()}


def rephrased_set(qs: QASet, name: str) -> QASet:
    """``qs`` with each item's question replaced by its rephrased variant (ids kept)."""
    from dataclasses import replace

    return QASet(name, [replace(it, question=it.rephrased or it.question) for it in qs], qs.source)


def build_medforget_tasks(spec: MedForgetSpec, seed: int = 0) -> tuple[TextTask, list[tuple[str, TextTask]]]:
    """The learning task (D = every record item) and one unlearning task per forget level.

    Each level's task: D_f = the target's subtree, D_r = the rest; evaluation sets ``forget`` and, for the metric
    ``hierarchy``, ``h.<group>`` / ``h.<group>.rephrased`` for the groups of :func:`relatives` (``others`` cut to
    the items of one other institution's first patient subtree … at most as many items as D_r's first 24); extras
    ``hierarchy`` = {level, targets, context_depth}.

    Raises:
        DataError: an empty group that the metric needs (e.g. no sibling at a level).
    """
    items = generate_records(spec, seed)
    full = QASet("full", items, f"medforget(seed={seed})")
    scenario0 = {"kind": "medforget", "seed": seed, "n_items": len(full), "levels": list(spec.forget_levels),
                 "n_forget": 0, "n_retain": len(full), "n_test": 0}
    # the learning task; its rephrased set puts the test wording into the tokenizer's corpus
    learn = TextTask("medforget", full, full.select_ids([], "forget"), full.renamed("retain"),
                     {"all.rephrased": rephrased_set(full, "all.rephrased")}, scenario0)
    out: list[tuple[str, TextTask]] = []
    for level in spec.forget_levels:
        target = target_nodes(items, level, spec.targets_of(level))
        f_ids = subtree_ids(items, target)
        forget = full.select_ids(f_ids, "forget")
        retain = full.exclude_ids(f_ids, "retain")
        check_split(full, forget, retain, f"medforget level {level}")
        groups = relatives(items, target)
        others = groups["others"][:24]
        evals: dict[str, QASet] = {"forget": forget, "forget.rephrased": rephrased_set(forget, "forget.rephrased")}
        for g, ids in {**groups, "others": others}.items():
            if len(ids) == 0:
                if g in ("descendants", "ancestors") or (g == "siblings" and level == "institution"):
                    continue
                raise DataError(f"medforget level {level}: the targets {target} have no {g}")
            qs = full.select_ids(ids, f"h.{g}")
            evals[f"h.{g}"] = qs
            evals[f"h.{g}.rephrased"] = rephrased_set(qs, f"h.{g}.rephrased")
        scenario = {**scenario0, "kind": "medforget", "level": level, "n_forget": len(forget),
                    "n_retain": len(retain), "group_sizes": {g: int(len(v)) for g, v in groups.items()},
                    "targets": list(target)}
        task = TextTask("medforget", full, forget, retain, evals, scenario,
                        {"hierarchy": {"level": level, "targets": list(target), "context_depth": spec.context_depth}})
        out.append((level, task))
    return learn, out


__all__ = ["LEVELS", "MedForgetSpec", "RecordItem", "SECTIONS", "build_medforget_tasks", "generate_records",
           "in_subtree", "level_of", "relatives", "rephrased_set", "subtree_ids", "target_nodes"]
