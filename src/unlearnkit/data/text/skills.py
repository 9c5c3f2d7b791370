"""A seeded generator of synthetic *skills* for skill unlearning on a CPU (``llm.data.source: skills``).

Skill unlearning (Li, Sun and Weng, NAACL 2025, arXiv:2503.21730) removes a capability — math (GSM8K), Python
(MBPP), a language (MLQA) — while keeping the others. Those benchmarks need billion-parameter models; this generator
gives a tiny model three skills it can learn from scratch, in the TOFU schema (so every TOFU metric applies):

- ``arithmetic``: "What is 37 plus 45?" → "37 plus 45 is 82." (plus, minus, times; subject ``arithmetic:<op>``);
- ``code``: "In Python, what is 'kalo'.upper()?" → "'kalo'.upper() is 'KALO'." (len, upper, reverse, slice;
  subject ``code:<kind>``);
- ``qa``: biography facts of fictitious persons (the built-in TOFU-style generator; subject = the person).

Every item has a paraphrased answer and ``n_perturbed`` perturbed answers (the same sentence with a wrong value of the
same type: another number, another string), so truth ratios and forget quality are defined.

The task: D = the ``n_per_skill`` training items of every skill (+ the real-authors / world-facts utility items, as
the synthetic TOFU task trains a from-scratch model on them); D_f = the forget skill's items, D_r = the others'.
Evaluation sets: ``forget`` (D_f), ``retain`` (the other skills' items, interleaved so the first ones cover every
skill), ``real_authors``, ``world_facts``, ``skill:<name>`` (each skill's training items), ``unseen:<name>``
(``n_unseen_per_skill`` new items of each skill, never trained on: does a detector generalise within the skill?) and
``holdout`` = ``unseen:<forget skill>`` (MIA non-members drawn like D_f).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.data.text.synthetic import _IDK, _SYL, generate_synthetic
from unlearnkit.errors import ConfigError

SKILLS = ("arithmetic", "code", "qa")
_OPS = (("plus", lambda a, b: a + b), ("minus", lambda a, b: a - b), ("times", lambda a, b: a * b))
_CODE = ("len", "upper", "reverse", "slice")


def _word(rng: np.random.Generator) -> str:
    return "".join(_SYL[i] for i in rng.integers(0, len(_SYL), int(rng.integers(2, 4))))


def _arith(rng: np.random.Generator, n_perturbed: int) -> tuple[str, str, str, tuple[str, ...], str]:
    name, f = _OPS[int(rng.integers(0, len(_OPS)))]
    if name == "times":
        a, b = int(rng.integers(2, 13)), int(rng.integers(2, 13))
    else:
        a, b = int(rng.integers(10, 100)), int(rng.integers(2, 100))
        if name == "minus" and b > a:
            a, b = b, a
    c = f(a, b)
    others = [c + d for d in (*range(-10, 0), *range(1, 11)) if c + d >= 0]
    wrong = rng.choice(others, size=n_perturbed, replace=False)
    q = f"What is {a} {name} {b}?"
    para = "The result of {a} {n} {b} is {v}."
    return (q, f"{a} {name} {b} is {c}.", para.format(a=a, n=name, b=b, v=c),
            tuple(para.format(a=a, n=name, b=b, v=int(w)) for w in wrong), f"arithmetic:{name}")


def _code(rng: np.random.Generator, n_perturbed: int) -> tuple[str, str, str, tuple[str, ...], str]:
    kind = _CODE[int(rng.integers(0, len(_CODE)))]
    w = _word(rng)
    if kind == "len":
        expr, v = f"len('{w}')", str(len(w))
        wrong = [str(x) for x in range(1, 12) if x != len(w)]
    else:
        fn = {"upper": str.upper, "reverse": lambda s: s[::-1], "slice": lambda s: s[:2]}[kind]
        expr = {"upper": f"'{w}'.upper()", "reverse": f"'{w}'[::-1]", "slice": f"'{w}'[:2]"}[kind]
        v = repr(fn(w))
        wrong = sorted({repr(fn(_word(rng))) for _ in range(4 * n_perturbed)} - {v})
    picks = rng.choice(len(wrong), size=min(n_perturbed, len(wrong)), replace=False)
    q = f"In Python, what is {expr}?" if kind != "len" else f"In Python, what does {expr} return?"
    para = "In Python, {e} evaluates to {v}."
    return (q, f"{expr} is {v}." if kind != "len" else f"{expr} returns {v}.", para.format(e=expr, v=v),
            tuple(para.format(e=expr, v=wrong[int(i)]) for i in picks), f"code:{kind}")


def _skill_items(skill: str, n: int, rng: np.random.Generator, id0: int, n_perturbed: int,
                 seen: set[str], seed: int) -> list[QAItem]:
    items: list[QAItem] = []
    if skill == "qa":
        persons = -(-n // 10) + 2
        full, _ = generate_synthetic(n_persons=persons * 2, qa_per_person=10, n_perturbed=n_perturbed, seed=seed)
        for it in full:
            if len(items) == n:
                break
            if it.question in seen:
                continue
            seen.add(it.question)
            items.append(QAItem(id0 + len(items), it.question, it.answer, it.paraphrased_answer,
                                it.perturbed_answers, it.subject, it.idk_answer))
        return items
    make = _arith if skill == "arithmetic" else _code
    tries = 0
    while len(items) < n:
        tries += 1
        if tries > 200 * n + 1000:
            raise ConfigError(f"skill {skill!r}: cannot draw {n} distinct questions; lower n_per_skill")
        q, a, para, pert, subj = make(rng, n_perturbed)
        if q in seen or len(pert) < n_perturbed:
            continue
        seen.add(q)
        items.append(QAItem(id0 + len(items), q, a, para, pert, subj, _IDK[int(rng.integers(0, len(_IDK)))]))
    return items


def _interleave(groups: Sequence[Sequence[QAItem]]) -> list[QAItem]:
    out: list[QAItem] = []
    for i in range(max((len(g) for g in groups), default=0)):
        out.extend(g[i] for g in groups if i < len(g))
    return out


def build_skills_task(
    forget_skill: str = "arithmetic",
    *,
    skills: Sequence[str] = SKILLS,
    n_per_skill: int = 60,
    n_unseen_per_skill: int = 20,
    n_perturbed: int = 3,
    seed: int = 0,
    utility_in_train: bool = True,
) -> TextTask:
    """The skills task (see the module docstring).

    Raises:
        ConfigError: unknown or repeated skills, fewer than two skills, a forget skill not among them, a skill set
            with no samples (``n_per_skill`` or ``n_unseen_per_skill`` < 1), ``n_perturbed`` outside [3, 7].
    """
    skills = list(skills)
    bad = [s for s in skills if s not in SKILLS]
    if bad or len(set(skills)) != len(skills):
        raise ConfigError(f"skills must be distinct names among {SKILLS}, got {skills}")
    if len(skills) < 2:
        raise ConfigError(f"skill unlearning needs a skill to forget and at least one to keep, got {skills}")
    if forget_skill not in skills:
        raise ConfigError(f"forget_skill {forget_skill!r} is not among the skills {skills}")
    if n_per_skill < 1 or n_unseen_per_skill < 1:
        raise ConfigError(f"every skill needs samples: n_per_skill = {n_per_skill}, n_unseen_per_skill = "
                          f"{n_unseen_per_skill} (both must be ≥ 1)")
    if not 3 <= n_perturbed <= 7:
        raise ConfigError(f"n_perturbed must be in [3, 7], got {n_perturbed}")
    train: dict[str, list[QAItem]] = {}
    unseen: dict[str, list[QAItem]] = {}
    for k, s in enumerate(skills):
        rng = np.random.default_rng([seed, k, 0x5C1])
        seen: set[str] = set()
        both = _skill_items(s, n_per_skill + n_unseen_per_skill, rng, 100_000 * (k + 1), n_perturbed, seen,
                            seed + 7919 * k)
        train[s] = both[:n_per_skill]
        unseen[s] = [QAItem(it.id + 50_000, it.question, it.answer, it.paraphrased_answer, it.perturbed_answers,
                            it.subject, it.idk_answer) for it in both[n_per_skill:]]
        if len(train[s]) < n_per_skill or len(unseen[s]) < n_unseen_per_skill:
            raise ConfigError(f"skill {s!r} produced {len(train[s])} + {len(unseen[s])} items, fewer than "
                              f"{n_per_skill} + {n_unseen_per_skill}")
    _, utility = generate_synthetic(n_persons=2, qa_per_person=10, n_perturbed=n_perturbed, seed=seed)
    src = f"skills(seed={seed})"
    items = [it for s in skills for it in train[s]]
    if utility_in_train:
        items += list(utility["real_authors"].items) + list(utility["world_facts"].items)
    full = QASet("full", items, src)
    forget = QASet("forget", train[forget_skill], src)
    retain = full.exclude_ids(forget.ids, "retain")
    check_split(full, forget, retain, f"skills task (forget {forget_skill})")
    others = [train[s] for s in skills if s != forget_skill]
    evals: dict[str, QASet] = {"forget": forget, "retain": QASet("retain", _interleave(others), src), **utility}
    for s in skills:
        evals[f"skill:{s}"] = QASet(f"skill:{s}", train[s], src)
        evals[f"unseen:{s}"] = QASet(f"unseen:{s}", unseen[s], src)
    evals["holdout"] = evals[f"unseen:{forget_skill}"].renamed("holdout")
    scenario = {"kind": "skills", "source": "skills", "seed": seed, "skills": skills, "forget_skill": forget_skill,
                "n_per_skill": n_per_skill, "n_unseen_per_skill": n_unseen_per_skill, "n_forget": len(forget),
                "n_retain": len(retain), "n_test": len(evals["holdout"]), "utility_in_train": utility_in_train,
                "subjects_forget": sorted({it.subject for it in forget if it.subject})}
    return TextTask("skills", full, forget, retain, evals, scenario)


__all__ = ["SKILLS", "build_skills_task"]
