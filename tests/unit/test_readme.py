"""The README's promises: the generated method/metric lists match the registries; the two quick-start commands
exist as Make targets; CI calls the README's test command; every bundled config validates."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _sync_module():
    spec = importlib.util.spec_from_file_location("sync_readme", ROOT / "benchmarks" / "sync_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_readme_lists_are_in_sync_with_registries():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    assert _sync_module().synced(text) == text, "run `python benchmarks/sync_readme.py` to refresh the README lists"
    from unlearnkit.methods import METHODS

    for name in METHODS.names():
        assert f"| `{name}` |" in text


def test_quick_start_commands_exist_and_ci_uses_the_test_command():
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    block = re.search(r"## Quick start.*?```bash\n(.*?)```", text, flags=re.S).group(1)
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands == ["make demo", "make test"]
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^demo:", makefile, flags=re.M) and re.search(r"^test:", makefile, flags=re.M)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "make test" in ci


CONFIGS = ROOT / "src" / "unlearnkit" / "configs"


@pytest.mark.parametrize("path", sorted(CONFIGS.rglob("*.yaml")), ids=lambda p: str(p.relative_to(CONFIGS)))
def test_bundled_configs_validate(path):
    """Every bundled YAML loads: service configs as ServiceConfig, the rest as experiments of their track."""
    if path.name.startswith("service_"):
        from unlearnkit.service.config import load_service_config

        svc = load_service_config(path)
        assert svc.host == "127.0.0.1"  # loopback unless told otherwise
        return
    from unlearnkit.bench import load_config

    cfg = load_config(path)
    assert cfg.name and cfg.methods and cfg.seeds
