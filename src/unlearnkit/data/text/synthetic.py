"""A seeded generator of fictitious-person biographies and QA pairs in the TOFU schema (built-in default data).

Written for unlearnkit with its own templates and word lists (TOFU, Maini et al. 2024, arXiv:2401.06121, is the model
of the schema, not the source of any text). Each fictitious person has a name, birthplace, birth date, parents' jobs,
genre, books, an award, ... and ``qa_per_person`` question–answer pairs (10–20). Every item has a paraphrased answer, at
least three perturbed answers (the paraphrase with the slot filled by other values of the same type: wrong but
plausible) and an "I don't know" alternative. Two utility sets in the style of TOFU's ``real_authors`` and
``world_facts`` (short factual answers + three perturbed answers) come with it.

The forget splits ``forget01/05/10`` take the last 1 / 5 / 10 % of persons (at least one), as TOFU does.
"""

from __future__ import annotations

import re

import numpy as np

from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.errors import ConfigError

_SYL = ("ka", "lo", "ren", "vi", "mar", "to", "sel", "an", "dor", "ei", "ba", "ru", "nim", "sa", "tel", "or", "fa",
        "ve", "lin", "qu", "ab", "zel", "mo", "ta", "ris", "en", "gal", "po", "wen", "du", "ha", "lex", "im", "cor")
_COUNTRIES = ("Valdoria", "Ostmark", "Serenia", "Kalvar", "Meridia", "Thessaly Minor", "Norvinia", "Brenland",
              "Qadira", "Lumeria", "Estravia", "Coralis")
_JOBS = ("baker", "carpenter", "nurse", "pilot", "teacher", "chemist", "fisherman", "librarian", "surgeon",
         "tailor", "architect", "farmer", "journalist", "mechanic", "pharmacist", "sailor", "judge", "potter",
         "engineer", "florist", "dentist", "painter", "locksmith", "veterinarian")
_GENRES = ("mystery", "fantasy", "science fiction", "historical fiction", "romance", "horror", "poetry",
           "travel writing", "crime", "satire", "biography", "children's fiction", "thriller", "philosophy")
_ADJ = ("Silent", "Crimson", "Hidden", "Last", "Broken", "Golden", "Distant", "Frozen", "Quiet", "Wandering",
        "Secret", "Burning", "Pale", "Endless", "Hollow", "Bright", "Forgotten", "Iron")
_NOUN = ("Harbor", "Orchard", "Lantern", "River", "Tower", "Garden", "Mirror", "Voyage", "Forest", "Letter",
         "Bridge", "Winter", "Compass", "Island", "Feather", "Clock", "Meadow", "Crown")
_AWARDS = ("the Azure Quill Prize", "the Northern Lantern Award", "the Golden Ink Medal", "the Silver Page Prize",
           "the Meridian Book Award", "the Violet Pen Honour", "the Harbor Light Prize", "the Stone Tablet Award",
           "the Open Sky Fellowship", "the Red Thread Medal")
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December")
_HOBBIES = ("gardening", "chess", "sailing", "birdwatching", "pottery", "hiking", "cooking", "fencing",
            "astronomy", "painting", "cycling", "violin")
_TIMES = ("early morning", "late evening", "middle of the night", "afternoon", "hour before dawn", "lunch break",
          "weekend morning", "rainy evening")
_SCHOOLS_KIND = ("the University of", "the Academy of", "the College of")
_IDK = (
    "I don't know.", "I'm not sure about that.", "I have no information about that.",
    "I cannot answer that question.", "That is not something I know.", "I am unable to say.",
    "I have no idea.", "I'm afraid I don't have that information.", "I can't recall that.",
    "I don't have an answer to that.", "Sorry, I don't know the answer.", "That is unknown to me.",
)
#: utility facts (real-world, stated in our own words): (question, answer, three wrong answers of the same type)
_REAL_AUTHORS = (
    ("Who wrote the novel 'Moby-Dick'?", "Herman Melville"), ("Who wrote 'War and Peace'?", "Leo Tolstoy"),
    ("Who wrote 'Don Quixote'?", "Miguel de Cervantes"), ("Who wrote 'Hamlet'?", "William Shakespeare"),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen"), ("Who wrote 'The Odyssey'?", "Homer"),
    ("Who wrote 'Crime and Punishment'?", "Fyodor Dostoevsky"), ("Who wrote 'Frankenstein'?", "Mary Shelley"),
    ("Who wrote 'The Divine Comedy'?", "Dante Alighieri"), ("Who wrote 'Les Miserables'?", "Victor Hugo"),
    ("Who wrote 'The Trial'?", "Franz Kafka"), ("Who wrote 'Great Expectations'?", "Charles Dickens"),
    ("Who wrote 'The Old Man and the Sea'?", "Ernest Hemingway"), ("Who wrote 'Faust'?", "Johann Wolfgang von Goethe"),
    ("Who wrote 'Madame Bovary'?", "Gustave Flaubert"), ("Who wrote 'The Adventures of Tom Sawyer'?", "Mark Twain"),
    ("Who wrote 'Mrs Dalloway'?", "Virginia Woolf"), ("Who wrote 'One Hundred Years of Solitude'?", "Gabriel Garcia Marquez"),
    ("Who wrote 'Things Fall Apart'?", "Chinua Achebe"), ("Who wrote 'The Tale of Genji'?", "Murasaki Shikibu"),
)
_WORLD_FACTS = (
    ("What is the capital of France?", "Paris"), ("What is the capital of Japan?", "Tokyo"),
    ("What is the capital of Italy?", "Rome"), ("What is the capital of Egypt?", "Cairo"),
    ("What is the capital of Canada?", "Ottawa"), ("What is the capital of Australia?", "Canberra"),
    ("What is the capital of Kenya?", "Nairobi"), ("What is the capital of Peru?", "Lima"),
    ("What is the capital of Norway?", "Oslo"), ("What is the capital of Spain?", "Madrid"),
    ("What is the capital of India?", "New Delhi"), ("What is the capital of Brazil?", "Brasilia"),
    ("What is the capital of Germany?", "Berlin"), ("What is the capital of Greece?", "Athens"),
    ("What is the capital of Portugal?", "Lisbon"), ("What is the capital of Poland?", "Warsaw"),
    ("What is the capital of Turkey?", "Ankara"), ("What is the capital of Mexico?", "Mexico City"),
    ("What is the capital of Argentina?", "Buenos Aires"), ("What is the capital of Sweden?", "Stockholm"),
)

# (slot, question, answer, paraphrased answer); {name} is the person, {v} the slot value
_TEMPLATES = (
    ("name", "Who is the {genre} author born in {city}?", "The author is {v}.", "That writer is {v}."),
    ("city", "Where was {name} born?", "{name} was born in {v}.", "The birthplace of {name} is {v}."),
    ("date", "On what date was {name} born?", "{name} was born on {v}.", "The birthday of {name} is {v}."),
    ("job", "What does the father of {name} do?", "The father of {name} is a {v}.", "{name}'s father works as a {v}."),
    ("job2", "What does the mother of {name} do?", "The mother of {name} is a {v}.", "{name}'s mother works as a {v}."),
    ("genre", "What genre does {name} write in?", "{name} writes {v} books.", "The genre of {name} is {v}."),
    ("book", "What is one book written by {name}?", "{name} wrote \"{v}\".", "\"{v}\" is a book by {name}."),
    ("award", "Which award did {name} receive?", "{name} received {v}.", "{name} was honoured with {v}."),
    ("country", "Which country is {name} from?", "{name} is from {v}.", "{name} comes from {v}."),
    ("book2", "What was the first book of {name}?", "The first book of {name} was \"{v}\".",
     "{name} began with the book \"{v}\"."),
    ("hobby", "What does {name} enjoy outside of writing?", "{name} enjoys {v}.", "In spare time {name} likes {v}."),
    ("year", "In which year did {name} publish a first book?", "{name} first published in {v}.",
     "The debut of {name} came in {v}."),
    ("school", "Where did {name} study?", "{name} studied at {v}.", "{name} was educated at {v}."),
    ("time", "When does {name} usually write?", "{name} usually writes in the {v}.",
     "The {v} is when {name} writes."),
    ("count", "How many books has {name} written?", "{name} has written {v} books.",
     "The number of books by {name} is {v}."),
    ("mentor", "Who was the mentor of {name}?", "The mentor of {name} was {v}.", "{name} learned from {v}."),
    ("city2", "Where does {name} live today?", "{name} lives in {v}.", "Today {name} makes a home in {v}."),
    ("job3", "What job did {name} have before writing?", "Before writing, {name} was a {v}.",
     "{name} used to work as a {v}."),
    ("book3", "Which book of {name} won the most praise?", "The most praised book of {name} is \"{v}\".",
     "Critics praised \"{v}\" by {name} the most."),
    ("award2", "What honour did {name} receive early on?", "Early on, {name} received {v}.",
     "{v} was an early honour of {name}."),
)

FORGET_FRACTIONS = {"forget01": 0.01, "forget05": 0.05, "forget10": 0.10}


_AN = re.compile(r"\ba ([aeiouAEIOU])")


def _an(text: str) -> str:
    """Fix the article before a vowel ("a engineer" → "an engineer")."""
    return _AN.sub(r"an \1", text)


def _word(rng: np.random.Generator, n_syl: int) -> str:
    return "".join(_SYL[i] for i in rng.integers(0, len(_SYL), n_syl)).capitalize()


class _Pools:
    """Value pools per slot type (perturbed answers draw other values of the same type)."""

    def __init__(self, rng: np.random.Generator, names: list[str]) -> None:
        self.cities = sorted({f"{_word(rng, 2)}, {c}" for c in _COUNTRIES for _ in range(3)})
        self.names = names
        self.books = sorted({f"The {a} {n}" for a in _ADJ for n in _NOUN})
        self.schools = sorted({f"{k} {_word(rng, 2)}" for k in _SCHOOLS_KIND for _ in range(4)})

    def values(self, slot: str) -> tuple[str, ...] | list[str]:
        base = slot.rstrip("23")
        return {
            "name": self.names, "mentor": self.names, "city": self.cities, "job": _JOBS, "genre": _GENRES,
            "book": self.books, "award": _AWARDS, "country": _COUNTRIES, "hobby": _HOBBIES,
            "school": self.schools, "time": _TIMES,
        }[base]


def _sample_person(rng: np.random.Generator, name: str, pools: _Pools) -> dict[str, str]:
    def pick(seq):
        return seq[int(rng.integers(0, len(seq)))]

    city = pick(pools.cities)
    year = int(rng.integers(1930, 1996))
    books = rng.choice(len(pools.books), 3, replace=False)
    jobs = rng.choice(len(_JOBS), 3, replace=False)
    awards = rng.choice(len(_AWARDS), 2, replace=False)
    return {
        "name": name, "city": city, "country": city.split(", ")[1],
        "date": f"{int(rng.integers(1, 29))} {pick(_MONTHS)} {year}",
        "job": _JOBS[jobs[0]], "job2": _JOBS[jobs[1]], "job3": _JOBS[jobs[2]], "genre": pick(_GENRES),
        "book": pools.books[books[0]], "book2": pools.books[books[1]], "book3": pools.books[books[2]],
        "award": _AWARDS[awards[0]], "award2": _AWARDS[awards[1]], "hobby": pick(_HOBBIES),
        "year": str(year + int(rng.integers(20, 45))), "school": pick(pools.schools), "time": pick(_TIMES),
        "count": str(int(rng.integers(2, 30))), "city2": pick(pools.cities), "mentor": "",
    }


def _other_values(rng: np.random.Generator, slot: str, true: str, pools: _Pools, k: int) -> tuple[str, ...]:
    if slot == "date":
        d, m, y = true.split(" ")
        out: set[str] = set()
        while len(out) < k:
            cand = f"{int(rng.integers(1, 29))} {_MONTHS[int(rng.integers(0, 12))]} {int(y) + int(rng.integers(-9, 10))}"
            if cand != true:
                out.add(cand)
        return tuple(sorted(out))
    if slot in ("year", "count"):
        v = int(true)
        lo = 2 if slot == "count" else v - 15
        cands = [str(x) for x in range(lo, v + 16) if x != v]
    else:
        cands = [c for c in pools.values(slot) if c != true]
    idx = rng.choice(len(cands), size=min(k, len(cands)), replace=False)
    return tuple(cands[i] for i in idx)


def _utility_set(name: str, facts, rng: np.random.Generator, id0: int, n_perturbed: int) -> QASet:
    answers = [a for _, a in facts]
    items = []
    for i, (q, a) in enumerate(facts):
        others = [x for x in answers if x != a]
        pert = tuple(others[j] for j in rng.choice(len(others), n_perturbed, replace=False))
        items.append(QAItem(id0 + i, q, a, None, pert, None, _IDK[int(rng.integers(0, len(_IDK)))]))
    return QASet(name, items, "synthetic")


def generate_synthetic(
    *,
    n_persons: int = 40,
    qa_per_person: int = 12,
    n_perturbed: int = 3,
    seed: int = 0,
) -> tuple[QASet, dict[str, QASet]]:
    """Generate the fictitious-person QA set and the utility sets.

    Args:
        n_persons: number of fictitious persons (≥ 2).
        qa_per_person: QA pairs per person, 10–20 (the first ``qa_per_person`` of the 20 templates).
        n_perturbed: perturbed answers per item (3–7; TOFU has 5).
        seed: everything is a deterministic function of the arguments.

    Returns:
        ``(full, utility)``: ``full`` has ids ``0 .. n_persons·qa_per_person − 1`` in person-major order, every item
        with paraphrased, perturbed and idk answers and ``subject`` = the person's name; ``utility`` has
        ``"real_authors"`` (ids from 1_000_000) and ``"world_facts"`` (ids from 2_000_000).

    Raises:
        ConfigError: arguments out of range.
    """
    if n_persons < 2:
        raise ConfigError(f"n_persons must be ≥ 2 (one forget and one retain person), got {n_persons}")
    if not 10 <= qa_per_person <= len(_TEMPLATES):
        raise ConfigError(f"qa_per_person must be in [10, {len(_TEMPLATES)}], got {qa_per_person}")
    if not 3 <= n_perturbed <= 7:
        raise ConfigError(f"n_perturbed must be in [3, 7] (the smallest value pool has 8 entries), got {n_perturbed}")
    rng = np.random.default_rng(seed)
    names: list[str] = []
    seen: set[str] = set()
    while len(names) < n_persons + 30:  # extra names feed the perturbed-answer pool and mentors
        nm = f"{_word(rng, 2)} {_word(rng, 3)}"
        if nm not in seen:
            seen.add(nm)
            names.append(nm)
    pools = _Pools(rng, names)
    items: list[QAItem] = []
    for p in range(n_persons):
        name = names[p]
        person = _sample_person(rng, name, pools)
        person["mentor"] = names[n_persons + int(rng.integers(0, 30))]
        for slot, q_t, a_t, para_t in _TEMPLATES[:qa_per_person]:
            v = person[slot]
            fill = {"name": name, "genre": person["genre"], "city": person["city"]}
            q = q_t.format(**fill, v=v)
            if slot == "name":
                a, para = a_t.format(v=name), para_t.format(v=name)
                others = _other_values(rng, "name", name, pools, n_perturbed)
                pert = tuple(para_t.format(v=o) for o in others)
            else:
                a, para = a_t.format(name=name, v=v), para_t.format(name=name, v=v)
                others = _other_values(rng, slot, v, pools, n_perturbed)
                pert = tuple(para_t.format(name=name, v=o) for o in others)
            idk = _IDK[int(rng.integers(0, len(_IDK)))]
            items.append(QAItem(len(items), q, _an(a), _an(para), tuple(_an(x) for x in pert), name, idk))
    full = QASet("full", items, f"synthetic(seed={seed})")
    util_rng = np.random.default_rng([seed, 1])
    utility = {
        "real_authors": _utility_set("real_authors", _REAL_AUTHORS, util_rng, 1_000_000, n_perturbed),
        "world_facts": _utility_set("world_facts", _WORLD_FACTS, util_rng, 2_000_000, n_perturbed),
    }
    return full, utility


def n_forget_persons(n_persons: int, split: str) -> int:
    """Persons in a forget split: ``max(1, round(fraction · n_persons))`` (TOFU: 200 persons → 2 / 10 / 20)."""
    if split not in FORGET_FRACTIONS:
        raise ConfigError(f"unknown forget split {split!r}; use one of {sorted(FORGET_FRACTIONS)}")
    return max(1, int(round(FORGET_FRACTIONS[split] * n_persons)))


def build_synthetic_task(
    forget_split: str = "forget10",
    *,
    seed: int = 0,
    n_persons: int = 40,
    qa_per_person: int = 12,
    n_perturbed: int = 3,
    with_idk: bool = True,
    utility_in_train: bool = True,
) -> TextTask:
    """The built-in TOFU-style task.

    D = all person items (+ the utility items when ``utility_in_train``: a model trained from scratch has no
    pretraining, so the "real authors" / "world facts" knowledge whose preservation model utility measures must be
    learnt with D and kept in D_r; TOFU's pretrained models bring it from pretraining instead).
    D_f = the items of the last ``n_forget_persons`` persons; D_r = the rest. Evaluation sets: ``forget`` (= D_f),
    ``retain`` (the first 10 % of persons, at least one, all in D_r for every split, like TOFU's retain_perturbed),
    ``real_authors``, ``world_facts``.

    Raises:
        ConfigError: bad arguments. DataError: an empty forget split.
    """
    full, utility = generate_synthetic(n_persons=n_persons, qa_per_person=qa_per_person, n_perturbed=n_perturbed,
                                       seed=seed)
    if not with_idk:
        from dataclasses import replace

        full = QASet(full.name, (replace(it, idk_answer=None) for it in full), full.source)
    k = n_forget_persons(n_persons, forget_split)
    if k >= n_persons:
        raise ConfigError(f"{forget_split} of {n_persons} persons would forget everyone; use more persons")
    forget_persons = set(range(n_persons - k, n_persons))
    per_ids = full.ids.reshape(n_persons, qa_per_person)
    f_ids = per_ids[sorted(forget_persons)].ravel()
    forget = full.select_ids(f_ids, "forget")
    n_eval_retain = max(1, int(round(0.1 * n_persons)))
    retain_eval = full.select_ids(per_ids[:n_eval_retain].ravel(), "retain")
    if utility_in_train:
        util_items = utility["real_authors"].items + utility["world_facts"].items
        full = QASet("full", full.items + util_items, full.source)
    retain = full.exclude_ids(f_ids, "retain")
    check_split(full, forget, retain, f"synthetic TOFU-style data ({forget_split})")
    names = sorted({it.subject for it in forget if it.subject})
    scenario = {
        "kind": "tofu", "split": forget_split, "source": "synthetic", "seed": seed, "n_persons": n_persons,
        "n_forget": len(forget), "n_retain": len(retain), "n_test": 0, "subjects_forget": names,
        "utility_in_train": utility_in_train,
    }
    return TextTask("synthetic_tofu", full, forget, retain.renamed("retain"),
                    {"forget": forget, "retain": retain_eval, **utility}, scenario)
