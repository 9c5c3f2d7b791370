"""CodeEraser and the code-secrets data (issue 18): the ascent touches only secret tokens, secret spans map to the
right tokens, a pattern that matches nothing is an error, the folder loader, EL / MA golden values."""

from __future__ import annotations

import numpy as np
import pytest
import torch

pytest.importorskip("transformers")

from unlearnkit.data.text.code import (  # noqa: E402
    CodeDataSpec,
    build_code_task,
    check_patterns,
    find_secrets,
    secret_token_mask,
    secret_token_spans,
)
from unlearnkit.data.text.qa import QASet  # noqa: E402
from unlearnkit.errors import ConfigError, DataError  # noqa: E402
from unlearnkit.llm.tokenize import IGNORE_INDEX, encode_qa  # noqa: E402
from unlearnkit.methods import METHODS  # noqa: E402
from unlearnkit.methods.llm.codeeraser import codeeraser_losses  # noqa: E402
from unlearnkit.metrics.code_secrets import ngram_overlap  # noqa: E402
from unlearnkit.models.llm import train_tokenizer  # noqa: E402

SPEC = CodeDataSpec(n_files=12, secret_files=4, unseen_secret_files=3, heldout_files=3, eval_retain=4)


def _tok(task):
    texts = [it.answer for s in (task.full, *task.eval_sets.values()) for it in s]
    return train_tokenizer(texts, vocab_size=400)


def test_every_planted_secret_is_found_and_the_split_is_by_secret():
    task = build_code_task(SPEC, seed=0)
    assert len(task.forget) == 4 and all(it.secrets for it in task.forget)
    assert not any(it.secrets for it in task.retain), "D_r must hold the secret-free training files"
    assert all(len(it.secrets) == SPEC.secrets_per_file for it in task.forget)
    assert all(it.secrets for it in task.eval_sets["unseen"]) and not any(it.secrets for it in task.eval_sets["heldout"])
    never = set(task.eval_sets["unseen"].ids) | set(task.eval_sets["heldout"].ids)
    assert not never & set(task.full.ids), "unseen / held-out files must never be trained on"
    for it in task.forget:  # each span is the value inside the quotes of its assignment line
        for s, e, kind in it.secrets:
            line = it.answer[:e].rsplit("\n", 1)[-1]
            assert line.endswith(it.answer[s:e]) and line[len(line) - (e - s) - 1] == '"'
            assert {"api_key": "API_KEY", "email": "ADMIN_EMAIL", "password": "DB_PASSWORD"}[kind] in line


def test_find_secrets_golden():
    text = 'x = 1\nAPI_KEY = "sk_live_abcdefgh12"\nmail = "ana.lo@ka.org"\npassword = "hunter22"\n'
    spans = find_secrets(text, {"api_key": r"\b((?:sk|pk)_(?:live|test)_[A-Za-z0-9]{8,})",
                                "email": r"[\w.]+@[\w.]+\.\w+", "password": r'password\s*=\s*"([^"]+)"'})
    assert [(text[s:e], k) for s, e, k in spans] == [("sk_live_abcdefgh12", "api_key"), ("ana.lo@ka.org", "email"),
                                                    ("hunter22", "password")]


def test_a_secret_pattern_that_matches_nothing_is_an_error():
    with pytest.raises(DataError, match="'ssh_key'.*match nothing"):
        check_patterns(["a = 1", "b = 2"], {"ssh_key": r"-----BEGIN [A-Z]+ PRIVATE KEY-----"}, "a corpus")
    bad = SPEC.model_copy(update={"secret_patterns": {"email": r"[\w.]+@[\w.]+\.\w+", "aws": r"AKIA[0-9A-Z]{16}"}})
    with pytest.raises(DataError, match="'aws'"):
        build_code_task(bad, seed=0)
    with pytest.raises(ConfigError, match="not a valid regular expression"):
        from unlearnkit.bench.resolve import resolve

        resolve({"track": "llm", "llm": {"data": {"source": "code", "code": {"secret_patterns": {"x": "(unclosed"}}}},
                 "methods": ["codeeraser"], "metrics": ["code_secrets"]})


def test_code_folder_loader(tmp_path):
    for i in range(6):
        body = f"def f{i}(x):\n    return x + {i}\n"
        if i % 2 == 0:
            body += f'DB_PASSWORD = "pw{i}secret"\n'
        (tmp_path / f"m{i}.py").write_text(body)
    (tmp_path / "notes.txt").write_text('password = "ignored"')
    task = build_code_task(CodeDataSpec(root=str(tmp_path), unseen_fraction=0.34, heldout_fraction=0.34), seed=0)
    paths = lambda s: sorted(it.path for it in s)  # noqa: E731
    assert paths(task.eval_sets["unseen"]) == ["m4.py"] and paths(task.eval_sets["heldout"]) == ["m5.py"]
    assert paths(task.forget) == ["m0.py", "m2.py"] and paths(task.retain) == ["m1.py", "m3.py"]
    assert [task.forget[0].answer[s:e] for s, e, _ in task.forget[0].secrets] == ["pw0secret"]
    with pytest.raises(DataError, match="not a folder"):
        build_code_task(CodeDataSpec(root=str(tmp_path / "missing")), seed=0)


def test_secret_token_mask_covers_exactly_the_secret_characters():
    task = build_code_task(SPEC, seed=1)
    tok = _tok(task)
    for it in task.forget:
        e = encode_qa(tok, "", it.answer, "raw", 512)
        mask = secret_token_mask(tok, it, e.prompt_len, len(e))
        assert not mask[0] and not mask[-1], "BOS and EOS are never secret tokens"
        runs = secret_token_spans(mask)
        assert len(runs) == len(it.secrets)
        for (a, b), (s, t, _) in zip(runs, it.secrets):
            text = tok.decode(list(e.input_ids[a:b]))
            assert it.answer[s:t] in text and len(text) < (t - s) + 4  # the secret, at most its delimiters more


def _batch():
    torch.manual_seed(0)
    labels = torch.tensor([[IGNORE_INDEX, 5, 6, 7, 8, 9, IGNORE_INDEX], [IGNORE_INDEX, 3, 4, 5, 6, IGNORE_INDEX,
                                                                           IGNORE_INDEX]])
    secret = torch.tensor([[False, False, True, True, False, False, False], [False, True, False, False, True, False,
                                                                             False]])
    logits = torch.randn(2, 7, 12, requires_grad=True)
    return logits, labels, secret


@pytest.mark.parametrize("kl", [0.0, 0.1])
def test_ascent_touches_only_secret_tokens(kl):
    """At θ = θ_o (the KL's gradient is 0 there): ∂L/∂(target logit) > 0 at secret positions (ascent: lowering the
    secret's probability lowers the loss), < 0 at the file's other tokens (descent), 0 where nothing is scored."""
    logits, labels, secret = _batch()
    ref = [torch.log_softmax(logits[i, :-1].detach(), -1)[secret[i, 1:] & (labels[i, 1:] != IGNORE_INDEX)]
           for i in range(2)]
    loss = codeeraser_losses(logits, labels, secret, ref, context_weight=0.1, secret_kl_weight=kl).sum()
    loss.backward()
    g = logits.grad
    for i in range(2):
        for t in range(6):  # position t predicts labels[t + 1]
            y = int(labels[i, t + 1])
            if y == IGNORE_INDEX:
                assert torch.all(g[i, t] == 0)
            elif bool(secret[i, t + 1]):
                assert g[i, t, y] > 0, f"secret token at ({i}, {t + 1}) must be ascended"
            else:
                assert g[i, t, y] < 0, f"context token at ({i}, {t + 1}) must be descended"
    assert torch.all(g[:, -1] == 0)


def test_codeeraser_loss_golden_without_kl():
    logits, labels, secret = _batch()
    got = codeeraser_losses(logits, labels, secret, None, context_weight=0.5, secret_kl_weight=0.0)
    lsm = torch.log_softmax(logits[:, :-1].detach(), -1)
    for i in range(2):
        s = [-float(lsm[i, t - 1, labels[i, t]]) for t in range(1, 7) if labels[i, t] != IGNORE_INDEX and secret[i, t]]
        c = [-float(lsm[i, t - 1, labels[i, t]]) for t in range(1, 7)
             if labels[i, t] != IGNORE_INDEX and not secret[i, t]]
        assert float(got[i].detach()) == pytest.approx(-np.mean(s) + 0.5 * np.mean(c), rel=1e-5)


def test_codeeraser_refuses_data_without_secrets():
    from unlearnkit.data.text.synthetic import build_synthetic_task

    m = METHODS.build("codeeraser", {})
    with pytest.raises(DataError, match="code files"):
        m.check_data(build_synthetic_task("forget10", n_persons=10, qa_per_person=10).forget)
    task = build_code_task(SPEC, seed=0)
    from unlearnkit.data.text.code import without_secrets

    stripped = QASet("forget", [without_secrets(it) for it in task.forget], "test")
    with pytest.raises(DataError, match="no secret span"):
        m.check_data(stripped)


def test_ngram_overlap_golden():
    assert ngram_overlap([1, 2, 3, 4], [1, 2, 3, 4], 2) == 1.0
    assert ngram_overlap([1, 2, 9, 9], [1, 2, 3, 4], 2) == pytest.approx(1 / 3)
    assert ngram_overlap([3, 4, 1, 2], [1, 2, 3, 4], 2) == pytest.approx(2 / 3)
    assert ngram_overlap([1], [1], 2) == 0.0
