"""The import layers (pyproject's import-linter contract, docs/ARCHITECTURE.md): kept by the tree, and broken — so CI
fails — by a new upward import; config/ is a leaf; no absolute machine path in the architecture guide."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src" / "unlearnkit"
LINT = Path(sys.executable).parent / "lint-imports"

pytestmark = pytest.mark.skipif(not LINT.is_file(), reason="import-linter not installed (pip install -e '.[dev]')")


def _lint(src_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT), "--config", str(ROOT / "pyproject.toml"), "--no-cache"], cwd=ROOT,
                          env={"PYTHONPATH": str(src_root), "PATH": "/usr/bin:/bin"}, capture_output=True,
                          text=True, timeout=300)


def test_the_tree_keeps_the_layer_contract():
    proc = _lint(ROOT / "src")
    assert proc.returncode == 0, proc.stdout[-3000:]


def test_an_upward_import_breaks_the_contract(tmp_path):
    copy = tmp_path / "src" / "unlearnkit"
    shutil.copytree(SRC, copy, ignore=shutil.ignore_patterns("__pycache__", "configs"))
    loader = copy / "config" / "loader.py"
    loader.write_text(loader.read_text() + "\n\ndef _upward():\n    from unlearnkit.bench import runner  # noqa\n")
    proc = _lint(tmp_path / "src")
    assert proc.returncode != 0
    assert "unlearnkit.config is not allowed to import unlearnkit.bench" in proc.stdout


def test_config_imports_nothing_of_unlearnkit_but_errors_and_persist():
    for f in (SRC / "config").glob("*.py"):
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("unlearnkit"):
                assert node.module.split(".")[1] in ("config", "errors", "persist"), (f.name, node.module)


def _recipe(title: str) -> str:
    import re

    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text(encoding="utf-8")
    section = text.split(f"### {title}", 1)[1]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_the_guides_method_and_metric_recipes_pass_the_conformance_kit():
    """The recipes of docs/ARCHITECTURE.md are code that works: executed here, checked by unlearnkit.testing."""
    from unlearnkit.methods import METHODS
    from unlearnkit.metrics import METRICS
    from unlearnkit.testing import check_metric, check_unlearner

    try:
        exec(compile(_recipe("Add a method"), "ARCHITECTURE.md:method", "exec"), {})
        exec(compile(_recipe("Add a metric"), "ARCHITECTURE.md:metric", "exec"), {})
        out = check_unlearner("my_method")
        assert out.steps > 0
        values = check_metric("forget_margin")
        assert values["forget_margin"] > 0 and values["forget_margin_oracle"] > 0
    finally:
        for reg, name in ((METHODS, "my_method"), (METRICS, "forget_margin")):
            if name in reg:
                reg.unregister(name)
