"""Code corpora with sensitive data for code-LM unlearning (CodeEraser; ``llm.data.source: code``).

Two sources, one layout:

- **synthetic** (default): a seeded generator of small Python modules written for unlearnkit (configuration
  modules, classes, helpers, database settings) in which secrets are planted — API keys, e-mail addresses and
  passwords, each a fresh random value;
- **a folder of source files** (``root``): every file under it with one of ``extensions`` (sorted paths, UTF-8,
  cut to ``max_chars``) is one training document — the user's real code corpus.

Secrets are located by regular expressions (``secret_patterns``; a pattern with a capture group marks the group,
otherwise the whole match), on the synthetic files too, so both sources go through the same detection. The paper
(Chu et al., ICSE 2026, "Scrub It Out!", §3) detects e-mails / IPs by regular expressions and keys with
detect-secrets; the built-in patterns cover the synthetic generator's formats and common key / e-mail / password
layouts.

Splits (item ids are the file order):

- D_f = the training files that contain a detected secret (at most ``forget_files``, the first ones) — the
  unlearning target is their secrets, the rest of each file is code to keep;
- ``unseen``: files with secrets that are *never trained on* (``unseen_secret_files`` synthetic files, or the last
  ``unseen_fraction`` of a folder's secret-bearing files): the memorisation thresholds are measured on them, as the
  paper measures MA / EL on code the model never saw;
- ``heldout``: secret-free files never trained on (code-completion utility);
- D_r = every other training file; the ``retain`` evaluation set is its first ``eval_retain`` files.

Each item is a :class:`CodeFile` — a :class:`~unlearnkit.data.text.qa.QAItem` with an empty question (``raw``
prompt format: the whole file is the text) plus its secret spans (character offsets in ``answer``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field, field_validator

from unlearnkit.config.schema import Frozen
from unlearnkit.data.text.qa import QAItem, QASet, TextTask, check_split
from unlearnkit.errors import ConfigError, DataError

#: built-in secret patterns (kind → regex; group 1, when present, is the secret)
DEFAULT_SECRET_PATTERNS: dict[str, str] = {
    "api_key": r"\b((?:sk|pk|rk)_(?:live|test)_[A-Za-z0-9]{8,})",
    "email": r"\b([A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,})\b",
    "password": r"(?i)(?:password|passwd|pwd)\w*\s*=\s*[\"']([^\"'\n]{4,})[\"']",
}


class CodeDataSpec(Frozen):
    """``llm.data.code``: the code corpus and its secrets."""

    root: str | None = Field(None, description="folder of source files (None = the synthetic generator)")
    extensions: list[str] = Field(default_factory=lambda: [".py"], description="folder: file suffixes to read")
    max_chars: int = Field(1200, ge=64, description="folder: characters kept per file (the head)")
    n_files: int = Field(120, ge=4, description="synthetic: training files")
    secret_files: int = Field(24, ge=1, description="synthetic: training files with planted secrets (D_f)")
    unseen_secret_files: int = Field(24, ge=1, description="synthetic: never-trained files with fresh secrets "
                                     "(memorisation thresholds)")
    heldout_files: int = Field(24, ge=1, description="synthetic: never-trained secret-free files (completion "
                               "utility)")
    secrets_per_file: int = Field(2, ge=1, le=3, description="synthetic: secrets planted per secret file")
    unseen_fraction: float = Field(0.3, gt=0, lt=1, description="folder: share of secret-bearing files held out "
                                   "(never trained) for the thresholds")
    heldout_fraction: float = Field(0.1, gt=0, lt=1, description="folder: share of secret-free files held out for "
                                    "completion utility")
    forget_files: int | None = Field(None, ge=1, description="cap on D_f (the first secret-bearing training files)")
    eval_retain: int = Field(24, ge=1, description="retain evaluation set: the first files of D_r")
    secret_patterns: dict[str, str] | None = Field(None, description="kind → regex (group 1 = the secret, else "
                                                   "the whole match); None = DEFAULT_SECRET_PATTERNS")

    @field_validator("secret_patterns")
    @classmethod
    def _compile(cls, v: dict[str, str] | None) -> dict[str, str] | None:
        for kind, pat in (v or {}).items():
            try:
                re.compile(pat)
            except re.error as err:
                raise ValueError(f"secret pattern {kind!r} is not a valid regular expression: {err}") from err
        if v is not None and not v:
            raise ValueError("secret_patterns is empty; give at least one pattern or leave it unset (built-in)")
        return v

    @property
    def patterns(self) -> dict[str, str]:
        return dict(self.secret_patterns or DEFAULT_SECRET_PATTERNS)


@dataclass(frozen=True)
class CodeFile(QAItem):
    """A source file as a QA item (``question`` empty, ``answer`` the file text) with its secret spans.

    Attributes:
        secrets: ``(start, end, kind)`` character spans of the secrets in ``answer`` (sorted, non-overlapping).
        path: where the file came from (a path, or ``synthetic/<n>.py``).
    """

    secrets: tuple[tuple[int, int, str], ...] = ()
    path: str = ""


def find_secrets(text: str, patterns: dict[str, str]) -> list[tuple[int, int, str]]:
    """Secret spans of ``text``: for every pattern, every match (group 1 when the pattern has groups); overlapping
    spans keep the earliest-starting (then longest) one.

    Returns:
        sorted ``(start, end, kind)`` character spans.
    """
    spans: list[tuple[int, int, str]] = []
    for kind, pat in patterns.items():
        rx = re.compile(pat)
        for m in rx.finditer(text):
            s, e = (m.span(1) if rx.groups else m.span())
            if e > s:
                spans.append((s, e, kind))
    spans.sort(key=lambda t: (t[0], -(t[1] - t[0])))
    out: list[tuple[int, int, str]] = []
    for s, e, k in spans:
        if out and s < out[-1][1]:
            continue
        out.append((s, e, k))
    return out


def check_patterns(files: list[str], patterns: dict[str, str], where: str, *, each: bool = True) -> dict[str, int]:
    """Matches per pattern over ``files``.

    Args:
        each: every pattern must match (the user's own patterns); False: at least one match in all (the built-in
            patterns on a user's folder, which need not contain every kind of secret).

    Raises:
        DataError: a pattern matches nothing (it names the pattern and the corpus: a typo in a user regex must not
            silently give an empty forget set), or (``each=False``) no pattern matches anything.
    """
    counts = {kind: 0 for kind in patterns}
    for text in files:
        for _s, _e, kind in find_secrets(text, patterns):
            counts[kind] += 1
    dead = [k for k, n in counts.items() if n == 0]
    if not each and len(dead) < len(counts):
        return counts
    if dead:
        raise DataError(f"secret pattern(s) {', '.join(repr(k) + ': ' + repr(patterns[k]) for k in dead)} match "
                        f"nothing in {where}; fix the regular expression or remove it from llm.data.code."
                        "secret_patterns")
    return counts


# -- the synthetic generator ---------------------------------------------------------------------------------------
_SYL = ("ka", "lo", "ren", "vi", "mar", "to", "sel", "an", "dor", "ei", "ba", "ru", "nim", "sa", "tel", "or", "fa",
        "ve", "lin", "qu", "zel", "mo", "ta", "ris", "en", "gal", "po", "wen", "du", "ha", "lex", "im", "cor")
_NOUNS = ("order", "user", "item", "price", "record", "score", "count", "token", "event", "report", "metric",
          "session", "account", "invoice", "message", "sample", "batch", "field", "value", "entry")
_VERBS = ("load", "save", "parse", "build", "fetch", "update", "merge", "format", "check", "compute", "collect",
          "filter", "render", "encode", "resolve")
_MODS = ("os", "json", "math", "time", "logging", "random", "re", "csv", "hashlib", "pathlib")
_TLDS = ("com", "org", "net", "io", "dev")
_ALNUM = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"


def _word(rng: np.random.Generator, n: int) -> str:
    return "".join(_SYL[i] for i in rng.integers(0, len(_SYL), n))


def _pick(rng: np.random.Generator, seq: tuple[str, ...] | list[str]) -> str:
    return seq[int(rng.integers(0, len(seq)))]


def _api_key(rng: np.random.Generator) -> str:
    return f"{_pick(rng, ('sk', 'pk'))}_{_pick(rng, ('live', 'test'))}_" + "".join(
        _ALNUM[i] for i in rng.integers(0, len(_ALNUM), 12))


def _email(rng: np.random.Generator) -> str:
    return f"{_word(rng, 2)}.{_word(rng, 2)}@{_word(rng, 2)}.{_pick(rng, _TLDS)}"


def _password(rng: np.random.Generator) -> str:
    return "".join(_ALNUM[i] for i in rng.integers(0, len(_ALNUM), 6)) + _pick(rng, ("!", "#", "$", "%")) + str(
        int(rng.integers(10, 100)))


def _block_helper(rng: np.random.Generator) -> str:
    noun, verb = _pick(rng, _NOUNS), _pick(rng, _VERBS)
    k = int(rng.integers(2, 10))
    return (f"def {verb}_{noun}s({noun}s):\n    total = 0\n    for {noun} in {noun}s:\n"
            f"        total += {noun} * {k}\n    return total\n")


def _block_class(rng: np.random.Generator) -> str:
    a, b = rng.choice(len(_NOUNS), 2, replace=False)
    a, b = _NOUNS[a], _NOUNS[b]
    cls = a.capitalize() + _pick(rng, ("Store", "Client", "Manager", "Handler", "Cache"))
    return (f"class {cls}:\n    def __init__(self, {a}, {b}):\n        self.{a} = {a}\n        self.{b} = {b}\n\n"
            f"    def get_{a}(self):\n        return self.{a}\n")


def _block_loader(rng: np.random.Generator) -> str:
    noun = _pick(rng, _NOUNS)
    return (f"def load_{noun}(path):\n    with open(path) as fh:\n        return json.load(fh)\n")


def _block_settings(rng: np.random.Generator, secrets: list[str]) -> str:
    host = _word(rng, 2)
    lines = [f'BASE_URL = "https://{host}.example.io/v{int(rng.integers(1, 4))}"',
             f"TIMEOUT = {int(rng.integers(5, 60))}"]
    for kind in secrets:
        if kind == "api_key":
            lines.append(f'API_KEY = "{_api_key(rng)}"')
        elif kind == "email":
            lines.append(f'ADMIN_EMAIL = "{_email(rng)}"')
        elif kind == "password":
            lines.append(f'DB_PASSWORD = "{_password(rng)}"')
    if not secrets:
        lines.append('API_KEY = os.environ["API_KEY"]')
    return "\n".join(lines) + "\n"


def synthetic_code_file(rng: np.random.Generator, secret_kinds: list[str]) -> str:
    """One generated module: two imports, a settings block (with the given secret kinds planted, or an API key read
    from the environment), then two of the helper / class / loader blocks."""
    mods = sorted(rng.choice(len(_MODS), 2, replace=False).tolist())
    head = "".join(f"import {_MODS[i]}\n" for i in mods) + "import json\n" * (all(_MODS[i] != "json" for i in mods))
    makers = (_block_helper, _block_class, _block_loader)
    body = [makers[int(i)](rng) for i in rng.choice(3, 2, replace=False)]
    return head + "\n" + _block_settings(rng, secret_kinds) + "\n\n" + "\n\n".join(body)


def generate_code_corpus(spec: CodeDataSpec, seed: int = 0) -> dict[str, list[str]]:
    """The synthetic corpus: ``{"train_secret": [...], "train_clean": [...], "unseen": [...], "heldout": [...]}``
    (file texts). Deterministic in (spec, seed)."""
    rng = np.random.default_rng([seed, 0xC0DE])
    kinds = ("api_key", "email", "password")

    def secret_file() -> str:
        chosen = sorted(rng.choice(len(kinds), spec.secrets_per_file, replace=False).tolist())
        return synthetic_code_file(rng, [kinds[i] for i in chosen])

    n_clean = spec.n_files - spec.secret_files
    if n_clean < 1:
        raise ConfigError(f"llm.data.code: n_files ({spec.n_files}) must exceed secret_files ({spec.secret_files}) "
                          "so that D_r keeps some code")
    return {"train_secret": [secret_file() for _ in range(spec.secret_files)],
            "train_clean": [synthetic_code_file(rng, []) for _ in range(n_clean)],
            "unseen": [secret_file() for _ in range(spec.unseen_secret_files)],
            "heldout": [synthetic_code_file(rng, []) for _ in range(spec.heldout_files)]}


def _read_folder(spec: CodeDataSpec) -> list[tuple[str, str]]:
    root = Path(spec.root or "").expanduser()
    if not root.is_dir():
        raise DataError(f"llm.data.code.root {str(root)!r} is not a folder; give a folder of source files")
    exts = tuple(e if e.startswith(".") else f".{e}" for e in spec.extensions)
    paths = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix in exts and not p.is_symlink())
    out = []
    for p in paths:
        try:
            text = p.read_text(encoding="utf-8")
        except (UnicodeDecodeError, OSError):
            continue
        if text.strip():
            out.append((str(p.relative_to(root)), text[:spec.max_chars]))
    if len(out) < 4:
        raise DataError(f"llm.data.code.root {str(root)!r} has {len(out)} readable {'/'.join(exts)} files; need at "
                        "least 4 (D_f, D_r, held-out code, unseen secrets)")
    return out


def build_code_task(spec: CodeDataSpec, seed: int = 0) -> TextTask:
    """The code-unlearning task of ``spec`` (synthetic or a folder; see the module docstring).

    Raises:
        ConfigError: inconsistent sizes.  DataError: a missing folder, a secret pattern that matches nothing, no
            secret-bearing file left for D_f or for the thresholds, no secret-free file for D_r / held-out code.
    """
    patterns = spec.patterns
    if spec.root is None:
        corpus = generate_code_corpus(spec, seed)
        named = {k: [(f"synthetic/{k}_{i}.py", t) for i, t in enumerate(v)] for k, v in corpus.items()}
        check_patterns([t for v in corpus.values() for t in v], patterns, "the synthetic code corpus")
        train = named["train_secret"] + named["train_clean"]
        unseen, heldout = named["unseen"], named["heldout"]
        source = f"synthetic code (seed={seed})"
    else:
        files = _read_folder(spec)
        check_patterns([t for _, t in files], patterns, f"the code folder {spec.root}",
                       each=spec.secret_patterns is not None)
        with_s = [f for f in files if find_secrets(f[1], patterns)]
        clean = [f for f in files if not find_secrets(f[1], patterns)]
        n_unseen = max(1, int(round(spec.unseen_fraction * len(with_s))))
        n_held = max(1, int(round(spec.heldout_fraction * len(clean))))
        if len(with_s) - n_unseen < 1 or len(clean) - n_held < 1:
            raise DataError(f"the code folder {spec.root} has {len(with_s)} files with secrets and {len(clean)} "
                            "without; need ≥ 2 of each (D_f + unseen secrets, D_r + held-out code)")
        unseen, heldout = with_s[len(with_s) - n_unseen:], clean[len(clean) - n_held:]
        train = with_s[:len(with_s) - n_unseen] + clean[:len(clean) - n_held]
        source = f"code folder {spec.root}"
    items: list[CodeFile] = []
    for path, text in train + unseen + heldout:
        items.append(CodeFile(len(items), "", text, subject=None, secrets=tuple(find_secrets(text, patterns)),
                              path=path))
    n_tr, n_un = len(train), len(unseen)
    tr_items, un_items, ho_items = items[:n_tr], items[n_tr:n_tr + n_un], items[n_tr + n_un:]
    full = QASet("full", tr_items, source)
    f_items = [it for it in tr_items if it.secrets]
    if spec.forget_files is not None:
        f_items = f_items[:spec.forget_files]
    if not f_items:
        raise DataError(f"no training file of {source} contains a secret: the forget set would be empty")
    forget = full.select_ids([it.id for it in f_items], "forget")
    retain = full.exclude_ids(forget.ids, "retain")
    check_split(full, forget, retain, source)
    if len(retain) == 0:
        raise DataError(f"every training file of {source} is in the forget set; D_r would be empty")
    retain_eval = retain.select_ids(retain.ids[:spec.eval_retain], "retain")
    n_sec = sum(len(it.secrets) for it in forget)
    scenario = {"kind": "code_secrets", "source": "synthetic" if spec.root is None else "folder", "seed": seed,
                "n_forget": len(forget), "n_retain": len(retain), "n_test": len(ho_items), "n_secrets": n_sec,
                "n_unseen_secrets": sum(len(it.secrets) for it in un_items), "patterns": sorted(patterns)}
    evals = {"forget": forget, "retain": retain_eval, "unseen": QASet("unseen", un_items, source),
             "heldout": QASet("heldout", ho_items, source)}
    return TextTask("code_secrets", full, forget, retain, evals, scenario, {"secret_patterns": patterns})


def without_secrets(item: CodeFile) -> CodeFile:
    """``item`` with its secret list emptied (a file whose secrets are not targets)."""
    return replace(item, secrets=())




def secret_token_mask(tokenizer: Any, item: CodeFile, prompt_len: int, n_tokens: int) -> list[bool]:
    """Which token positions of an encoded file are secret tokens.

    Args:
        tokenizer: a fast tokenizer (offset mapping).
        item: the file; its ``answer`` is tokenised without special tokens, as the raw prompt format encodes it.
        prompt_len: tokens before the file text in the encoded example (BOS: 1).
        n_tokens: length of the encoded example (after truncation, EOS included when it fits).

    Returns:
        ``n_tokens`` booleans: True where the token's characters overlap a secret span (prompt and EOS: False).

    Raises:
        DataError: the tokenizer has no offset mapping, or its ids differ from the encoding's (a changed
            tokenizer).
    """
    try:
        enc = tokenizer(item.answer, add_special_tokens=False, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError) as err:
        raise DataError("secret token masks need a fast tokenizer with offset mappings "
                        f"({type(tokenizer).__name__} has none)") from err
    offsets = enc["offset_mapping"]
    out = [False] * n_tokens
    for j, (s, e) in enumerate(offsets):
        pos = prompt_len + j
        if pos >= n_tokens:
            break
        out[pos] = any(s < se and e > ss for ss, se, _ in item.secrets)
    return out


def secret_token_spans(mask: list[bool]) -> list[tuple[int, int]]:
    """Maximal runs ``[start, end)`` of True in a token mask (one per secret, unless two secrets touch)."""
    spans, start = [], None
    for i, m in enumerate([*mask, False]):
        if m and start is None:
            start = i
        elif not m and start is not None:
            spans.append((start, i))
            start = None
    return spans


__all__ = ["CodeDataSpec", "CodeFile", "DEFAULT_SECRET_PATTERNS", "build_code_task", "check_patterns",
           "find_secrets", "generate_code_corpus", "secret_token_mask", "secret_token_spans", "synthetic_code_file",
           "without_secrets"]
