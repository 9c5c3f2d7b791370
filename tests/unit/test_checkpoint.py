"""Checkpoints: safetensors + manifest round trip, atomic writes, SHA-256 verification, strict loading, ModelCache."""

from __future__ import annotations

import json
import os

import pytest
import torch
from testkit import tiny_model

from unlearnkit.engine.checkpoint import (
    EXTRAS_FILE,
    MANIFEST,
    MODEL_FILE,
    ModelCache,
    file_sha256,
    load_checkpoint,
    load_state_strict,
    manifest_digest,
    read_manifest,
    save_checkpoint,
    state_sha256,
)
from unlearnkit.errors import CheckpointError

KEY = "ab" * 32  # a valid lowercase hex lineage key


def _no_temp_dirs(folder) -> bool:
    return not [p.name for p in folder.iterdir() if ".tmp-" in p.name]


@pytest.fixture
def saved(tmp_path):
    model = tiny_model(3)
    ids = torch.tensor([4, 8, 15, 16, 23, 42])
    d = tmp_path / "ck"
    manifest = save_checkpoint(d, model, lineage_key=KEY, meta={"seconds": 1.5}, extras={"trained_ids": ids})
    return d, model, ids, manifest


def test_round_trip_is_bit_identical(saved):
    d, model, ids, manifest = saved
    fresh = tiny_model(99)
    assert state_sha256(fresh) != state_sha256(model)
    state, man, extras = load_checkpoint(d, fresh)
    assert state_sha256(fresh) == state_sha256(model)
    for k, v in model.state_dict().items():
        assert torch.equal(state[k], v) and state[k].dtype == v.dtype
    assert torch.equal(extras["trained_ids"], ids) and extras["trained_ids"].dtype == torch.int64
    assert man["lineage_key"] == KEY and man["meta"] == {"seconds": 1.5}
    assert man["files"][MODEL_FILE] == file_sha256(d / MODEL_FILE)
    assert man["files"][EXTRAS_FILE] == file_sha256(d / EXTRAS_FILE)
    assert man == manifest


def test_atomic_write_leaves_only_the_final_directory(saved, tmp_path):
    d, *_ = saved
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ck"]
    assert sorted(p.name for p in d.iterdir()) == sorted([MODEL_FILE, EXTRAS_FILE, MANIFEST])


def test_failed_write_leaves_nothing(tmp_path):
    with pytest.raises(AttributeError):
        save_checkpoint(tmp_path / "bad", tiny_model(0), extras={"trained_ids": "not a tensor"})  # type: ignore[dict-item]
    assert list(tmp_path.iterdir()) == []


def test_rewrite_identical_is_a_noop_and_different_weights_are_refused(saved, tmp_path):
    d, model, ids, manifest = saved
    again = save_checkpoint(d, model, lineage_key=KEY, meta={"seconds": 1.5}, extras={"trained_ids": ids})
    assert again == manifest
    with pytest.raises(CheckpointError, match="already exists with different weights"):
        save_checkpoint(d, tiny_model(4), lineage_key=KEY, extras={"trained_ids": ids})
    assert _no_temp_dirs(tmp_path)
    load_checkpoint(d, tiny_model(0))  # the original is intact


def test_flipped_byte_in_weights_is_detected(saved):
    d, *_ = saved
    raw = bytearray((d / MODEL_FILE).read_bytes())
    raw[-3] ^= 0x01  # one bit of the last weight
    (d / MODEL_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="SHA-256 mismatch"):
        load_checkpoint(d, tiny_model(0))


def test_flipped_byte_in_extras_is_detected(saved):
    d, *_ = saved
    raw = bytearray((d / EXTRAS_FILE).read_bytes())
    raw[-1] ^= 0xFF
    (d / EXTRAS_FILE).write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="mismatch"):
        load_checkpoint(d)


def test_edited_manifest_is_detected(saved):
    d, *_ = saved
    man = json.loads((d / MANIFEST).read_text())
    digest = man["files"][MODEL_FILE]
    man["files"][MODEL_FILE] = ("0" if digest[0] != "0" else "1") + digest[1:]
    (d / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match="mismatch"):
        load_checkpoint(d, tiny_model(0))


def test_manifest_without_the_model_entry_or_corrupt_is_refused(saved):
    d, *_ = saved
    man = json.loads((d / MANIFEST).read_text())
    del man["files"][MODEL_FILE]
    man["manifest_sha256"] = manifest_digest(man)  # a consistent manifest that lists no weights
    (d / MANIFEST).write_text(json.dumps(man))
    with pytest.raises(CheckpointError, match=MODEL_FILE):
        load_checkpoint(d)
    (d / MANIFEST).write_text("{not json")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(d)
    (d / MANIFEST).write_text(json.dumps({**man, "format": "other/9"}))
    with pytest.raises(CheckpointError, match="unknown checkpoint format"):
        read_manifest(d)
    os.remove(d / MANIFEST)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(d)


def test_missing_weights_file_is_detected(saved):
    d, *_ = saved
    os.remove(d / MODEL_FILE)
    with pytest.raises(CheckpointError, match="missing"):
        load_checkpoint(d)


# -- strict loading (C29) -------------------------------------------------------------------------------------------
def test_c29_renamed_key_names_missing_and_unexpected_keys(tmp_path):
    model = tiny_model(0)
    state = dict(model.state_dict())
    state["head.weight"] = state.pop("2.weight")
    with pytest.raises(CheckpointError) as exc:
        load_state_strict(tiny_model(1), state)
    msg = str(exc.value)
    assert "missing keys ['2.weight']" in msg and "unexpected keys ['head.weight']" in msg
    # the same through a saved checkpoint, and the target model stays untouched
    save_checkpoint(tmp_path / "renamed", state)
    target = tiny_model(1)
    before = state_sha256(target)
    with pytest.raises(CheckpointError, match=r"missing keys \['2.weight'\]"):
        load_checkpoint(tmp_path / "renamed", target)
    assert state_sha256(target) == before


def test_c29_bare_state_dict_loads_and_gives_the_same_outputs(tmp_path):
    model = tiny_model(0)
    save_checkpoint(tmp_path / "bare", model.state_dict())
    target = tiny_model(1)
    load_checkpoint(tmp_path / "bare", target)
    x = torch.randn(5, 8)
    assert torch.equal(model(x), target(x))


def test_shape_mismatch_is_refused():
    state = tiny_model(0).state_dict()
    with pytest.raises(CheckpointError, match=r"shape mismatches \['0.weight'\]"):
        load_state_strict(tiny_model(0, dim=4), state)


# -- ModelCache ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad", ["", "ABCDEF", "../etc", "12g4", "ab/cd", " ab"])
def test_cache_key_validation(tmp_path, bad):
    with pytest.raises(CheckpointError, match="invalid cache key"):
        ModelCache(tmp_path).path(bad)


def test_cache_save_has_load(tmp_path):
    cache = ModelCache(tmp_path / "cache")
    model = tiny_model(5)
    assert not cache.has(KEY)
    cache.save(KEY, model, meta={"role": "original"}, extras={"trained_ids": torch.arange(3)})
    assert cache.has(KEY) and cache.path(KEY) == tmp_path / "cache" / KEY
    target = tiny_model(0)
    manifest, extras = cache.load(KEY, target)
    assert state_sha256(target) == state_sha256(model)
    assert manifest["lineage_key"] == KEY and extras["trained_ids"].tolist() == [0, 1, 2]
    assert _no_temp_dirs(tmp_path / "cache")


def test_cache_refuses_a_checkpoint_filed_under_another_key(tmp_path):
    cache = ModelCache(tmp_path)
    cache.save(KEY, tiny_model(0))
    other = "cd" * 32
    os.rename(cache.path(KEY), cache.path(other))
    with pytest.raises(CheckpointError, match="lineage key"):
        cache.load(other, tiny_model(0))


def test_cache_load_of_absent_key_is_a_checkpoint_error(tmp_path):
    with pytest.raises(CheckpointError):
        ModelCache(tmp_path).load(KEY, tiny_model(0))


def test_state_sha256_handles_batchnorm_scalars_and_detects_changes():
    """BatchNorm's ``num_batches_tracked`` is a 0-dim int64 buffer; hashing must cover it (it failed once)."""
    import torch
    from torch import nn

    from unlearnkit.engine.checkpoint import state_sha256

    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
    h0 = state_sha256(m)
    assert h0 == state_sha256(m) and len(h0) == 64
    m[1].num_batches_tracked += 1
    assert state_sha256(m) != h0
