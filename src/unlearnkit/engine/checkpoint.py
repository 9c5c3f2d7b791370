"""Checkpoints: safetensors weights + ``manifest.json`` (SHA-256 of every file, lineage key), atomic, verified.

Layout of a checkpoint directory::

    model.safetensors      the state dict (weights only; no pickle)
    extras.safetensors     optional tensors (e.g. ``trained_ids``: the sample ids the model was trained on)
    manifest.json          {"format", "lineage_key", "files": {name: sha256}, "meta": {...}, "created_at",
                            "manifest_sha256"}

``manifest_sha256`` is the SHA-256 of the canonical JSON of the rest of the manifest, so ``meta`` (e.g. the training
seconds that RTE ratios are computed from) and the lineage key cannot be edited unnoticed either. Manifests of the
older format ``unlearnkit-checkpoint/1`` carry no such digest and are refused (delete the folder: the model is
retrained).

Writes go to a temporary sibling directory (each file fsynced) that is renamed into place, so a crash never leaves a
half-written checkpoint under the final name. Loading recomputes every file's SHA-256 and raises
:class:`CheckpointError` on any mismatch, missing file, or state-dict key mismatch (never a silent non-strict load).
A checkpoint folder or file that is a symbolic link is refused (unlearnkit never creates one; a planted link would
make it read or write elsewhere).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from unlearnkit.errors import CheckpointError
from unlearnkit.persist import canonical_json, fsync_dir, sha256_file, stable_hash

FORMAT = "unlearnkit-checkpoint/2"
LEGACY_FORMATS = ("unlearnkit-checkpoint/1",)
MODEL_FILE = "model.safetensors"
EXTRAS_FILE = "extras.safetensors"
MANIFEST = "manifest.json"
#: an inference-time policy saved with the weights: {"kind", "config"} as JSON, its tensors as safetensors
POLICY_FILE = "policy.json"
POLICY_TENSORS_FILE = "policy.safetensors"


file_sha256 = sha256_file  # SHA-256 hex digest of a file's bytes


def state_sha256(model: nn.Module) -> str:
    """SHA-256 over the state dict's names, dtypes, shapes and bytes (identifies weights in memory)."""
    h = hashlib.sha256()
    for k, v in sorted(model.state_dict().items()):
        t = v.detach().cpu().contiguous()
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _sync_and_hash(path: Path, chunk: int = 1 << 20) -> str:
    """fsync a just-written file and return the SHA-256 of its bytes (read back in 1 MiB chunks), with one open."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        os.fsync(f.fileno())
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


_fsync_dir = fsync_dir


def _plain_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # clone: safetensors refuses tensors that share storage (tied weights) and non-contiguous views
    return {k: v.detach().cpu().clone().contiguous() for k, v in state.items()}


def save_checkpoint(
    directory: str | Path,
    model: nn.Module | dict[str, torch.Tensor],
    *,
    lineage_key: str = "",
    meta: dict[str, Any] | None = None,
    extras: dict[str, torch.Tensor] | None = None,
    sync_parent: bool = True,
    policy: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Atomically write a checkpoint directory; returns the manifest.

    Args:
        directory: final path; must not exist yet (checkpoints are immutable) unless it is an identical rewrite.
        model: module or state dict.
        lineage_key: hash identifying how the weights were produced (data, model, recipe, seed).
        meta: JSON-serialisable facts (training seconds, steps, ...).
        extras: other tensors to store (``trained_ids`` ...).
        policy: an inference-time policy saved with the weights: ``{"kind": str, "config": JSON dict, "tensors":
            {name: tensor}}`` (see :mod:`unlearnkit.models.policy`); its files are digested like the weights.
        sync_parent: fsync ``directory.parent`` after the rename (default), so the new name survives a power loss
            on return. False leaves that to the caller, who writes several checkpoints into the same folder and
            fsyncs it once (:func:`fsync_dir`) before anything refers to them; every file and the checkpoint's own
            folder are fsynced either way, and the rename is atomic either way.

    Raises:
        CheckpointError: the directory exists with different content.
    """
    directory = Path(directory)
    _refuse_link(directory)
    state = model.state_dict() if isinstance(model, nn.Module) else model
    tmp = directory.parent / f".{directory.name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir(parents=True, exist_ok=False)
    try:
        files = {MODEL_FILE: _plain_state(state)}
        if extras:
            files[EXTRAS_FILE] = _plain_state(extras)
        digests = {}
        if policy is not None and policy.get("tensors"):
            files[POLICY_TENSORS_FILE] = _plain_state(policy["tensors"])
        for name, tensors in files.items():
            save_file(tensors, str(tmp / name))
            digests[name] = _sync_and_hash(tmp / name)  # one open: fsync, then hash the bytes on disk
        if policy is not None:
            (tmp / POLICY_FILE).write_text(canonical_json({"kind": policy["kind"], "config": policy.get("config", {})}),
                                           encoding="utf-8")
            digests[POLICY_FILE] = _sync_and_hash(tmp / POLICY_FILE)
        manifest = {
            "format": FORMAT,
            "lineage_key": lineage_key,
            "files": digests,
            "meta": meta or {},
            "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        manifest["manifest_sha256"] = manifest_digest(manifest)
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            f.write(json.dumps(manifest, indent=2, sort_keys=True))  # one write (json.dump writes piece by piece)
            f.flush()
            os.fsync(f.fileno())
        _fsync_dir(tmp)
        if directory.exists():
            old = read_manifest(directory)
            if old.get("files") != digests:
                raise CheckpointError(
                    f"checkpoint {directory} already exists with different weights; checkpoints are immutable — "
                    "delete it or use another lineage key"
                )
            shutil.rmtree(tmp)
            return old
        os.replace(tmp, directory)
        if sync_parent:
            _fsync_dir(directory.parent)
        return manifest
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def manifest_digest(manifest: dict[str, Any]) -> str:
    """SHA-256 hex of the canonical JSON of ``manifest`` without its ``manifest_sha256`` field."""
    return stable_hash({k: v for k, v in manifest.items() if k != "manifest_sha256"})


def _refuse_link(path: Path) -> None:
    if path.is_symlink():
        raise CheckpointError(f"{path} is a symbolic link; unlearnkit never follows links inside checkpoint, run and "
                              "cache folders: remove the link (the model is retrained or rewritten)")


def read_manifest(directory: str | Path) -> dict[str, Any]:
    """Parse ``manifest.json`` of a checkpoint directory and check its ``manifest_sha256``.

    Raises:
        CheckpointError: missing, malformed, of an unknown or older format, edited (digest mismatch), or a link.
    """
    path = Path(directory) / MANIFEST
    _refuse_link(Path(directory))
    _refuse_link(path)
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as err:
        raise CheckpointError(f"{directory} is not a checkpoint: {MANIFEST} is missing") from err
    except (json.JSONDecodeError, UnicodeDecodeError, RecursionError) as err:
        raise CheckpointError(f"{path} is corrupt ({type(err).__name__}); delete the checkpoint directory to rebuild "
                              "it") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt in LEGACY_FORMATS:
        raise CheckpointError(f"{path}: format {fmt} has no manifest digest, so its meta (training time, lineage) "
                              f"cannot be verified; delete the folder {directory} (the model is trained again)")
    if fmt != FORMAT or not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("meta"), dict):
        raise CheckpointError(f"{path}: unknown checkpoint format {str(fmt)[:60]!r} (expected {FORMAT})")
    if manifest.get("manifest_sha256") != manifest_digest(manifest):
        raise CheckpointError(f"{path}: manifest digest mismatch — the manifest (its meta, lineage key or file list) "
                              f"was edited or is corrupt; delete the folder {directory} to retrain it")
    return manifest


def verify_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Recompute every file's SHA-256 against the manifest; returns the manifest.

    Raises:
        CheckpointError: a listed file is missing or its digest differs (tampered or corrupt).
    """
    directory = Path(directory)
    manifest = read_manifest(directory)
    if MODEL_FILE not in manifest["files"]:
        raise CheckpointError(f"{directory}: manifest lists no {MODEL_FILE}")
    for name, want in manifest["files"].items():
        path = directory / name
        if not isinstance(name, str) or Path(name).name != name:
            raise CheckpointError(f"{directory}: the manifest lists a file outside the checkpoint ({str(name)[:60]!r})")
        _refuse_link(path)
        if not path.is_file():
            raise CheckpointError(f"{directory}: {name} listed in the manifest is missing")
        got = file_sha256(path)
        if got != want:
            raise CheckpointError(
                f"{path}: SHA-256 mismatch (manifest {want[:12]}…, file {got[:12]}…): the checkpoint was modified or "
                f"is corrupt; delete the whole folder {directory} to retrain it, or restore the original file"
            )
    return manifest


def load_checkpoint(
    directory: str | Path, model: nn.Module | None = None
) -> tuple[dict[str, torch.Tensor], dict[str, Any], dict[str, torch.Tensor]]:
    """Verify and load a checkpoint; if ``model`` is given, load the weights into it strictly.

    Returns:
        (state_dict, manifest, extras)

    Raises:
        CheckpointError: digest mismatch, unreadable file, or state-dict keys/shapes that do not match ``model``
            (the message lists missing and unexpected keys).
    """
    directory = Path(directory)
    manifest = verify_checkpoint(directory)
    try:
        state = load_file(str(directory / MODEL_FILE))
        extras = load_file(str(directory / EXTRAS_FILE)) if EXTRAS_FILE in manifest["files"] else {}
    except (SafetensorError, OSError) as err:
        raise CheckpointError(f"{directory}: cannot read weights ({err})") from err
    if model is not None:
        load_state_strict(model, state, str(directory))
    return state, manifest, extras


def read_policy(directory: str | Path, manifest: dict[str, Any]) -> dict[str, Any] | None:
    """The policy saved in a verified checkpoint (``{"kind", "config", "tensors"}``), or None if it has none.

    Raises:
        CheckpointError: the policy file is unreadable.
    """
    directory = Path(directory)
    if POLICY_FILE not in manifest["files"]:
        return None
    try:
        head = json.loads((directory / POLICY_FILE).read_text(encoding="utf-8"))
        tensors = load_file(str(directory / POLICY_TENSORS_FILE)) if POLICY_TENSORS_FILE in manifest["files"] else {}
    except (OSError, ValueError, SafetensorError) as err:
        raise CheckpointError(f"{directory}: cannot read the saved inference-time policy ({err})") from err
    if not isinstance(head, dict) or not isinstance(head.get("kind"), str):
        raise CheckpointError(f"{directory / POLICY_FILE}: not a saved policy (no 'kind')")
    return {"kind": head["kind"], "config": head.get("config") or {}, "tensors": tensors}


def load_state_strict(model: nn.Module, state: dict[str, torch.Tensor], where: str = "state dict") -> None:
    """``model.load_state_dict(state, strict=True)`` with a CheckpointError naming missing/unexpected keys."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shape:
        raise CheckpointError(
            f"{where} does not fit the model: missing keys {missing[:5]}, unexpected keys {unexpected[:5]}, "
            f"shape mismatches {shape[:5]}; was it saved from a different architecture?"
        )
    model.load_state_dict(state, strict=True)


class ModelCache:
    """Content-addressed store of trained models: ``root/<lineage_key>/`` checkpoint directories.

    θ_o and θ_r are cached by their lineage key (hash of resolved data/model/recipe config, seed and trained ids), so
    every run and method that needs the same model reuses it, and any change of those inputs trains a new one.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def path(self, key: str) -> Path:
        if not key or any(c not in "0123456789abcdef" for c in key):
            raise CheckpointError(f"invalid cache key {key!r}: expected a lowercase hex digest")
        return self.root / key

    def has(self, key: str) -> bool:
        return (self.path(key) / MANIFEST).is_file()

    def load(self, key: str, model: nn.Module) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """Load cached weights into ``model``; returns (manifest, extras). Raises CheckpointError if absent/tampered."""
        _, manifest, extras = load_checkpoint(self.path(key), model)
        if manifest.get("lineage_key") != key:
            raise CheckpointError(
                f"{self.path(key)}: manifest lineage key {manifest.get('lineage_key')!r} ≠ directory key {key!r}"
            )
        return manifest, extras

    def save(self, key: str, model: nn.Module, *, meta: dict[str, Any] | None = None,
             extras: dict[str, torch.Tensor] | None = None) -> dict[str, Any]:
        self.root.mkdir(parents=True, exist_ok=True)
        return save_checkpoint(self.path(key), model, lineage_key=key, meta=meta, extras=extras)
