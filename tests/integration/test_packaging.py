"""C50: the built wheel ships every subpackage, module and bundled config; every registry entry imports from it."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel built from a copy of the checkout in a temporary folder (setuptools writes build/ and *.egg-info
    next to the sources it builds: never into the checkout). A build that fails is a test failure, not a skip."""
    import shutil

    import setuptools

    major = int(setuptools.__version__.split(".")[0])
    assert major >= 68, (f"setuptools {setuptools.__version__} is too old to build the wheel without network "
                         "(pyproject.toml needs >= 68): pip install 'setuptools>=68' (make test does)")
    tmp = tmp_path_factory.mktemp("wheel")
    copy = tmp / "checkout"
    copy.mkdir()
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", "*.pyc")
    for name in ("pyproject.toml", "README.md", "LICENSE", "setup.cfg", "setup.py", "MANIFEST.in"):
        if (ROOT / name).is_file():
            shutil.copy2(ROOT / name, copy / name)
    shutil.copytree(ROOT / "src", copy / "src", ignore=ignore)
    out = tmp / "dist"
    listing = lambda: sorted(p.name for p in [*ROOT.iterdir(), *(ROOT / "src").iterdir()])  # noqa: E731
    before = listing()
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(copy), "--no-deps", "--no-build-isolation", "-q", "-w", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp,
    )
    assert proc.returncode == 0, f"the wheel build failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}"
    assert listing() == before  # nothing written into the checkout
    wheels = list(out.glob("unlearnkit-*.whl"))
    assert len(wheels) == 1
    return wheels[0]


def test_wheel_contains_every_module_and_config(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    src = ROOT / "src"
    expected = {p.relative_to(src).as_posix() for p in (src / "unlearnkit").rglob("*.py")}
    expected |= {p.relative_to(src).as_posix() for p in (src / "unlearnkit" / "configs").glob("*.yaml")}
    missing = sorted(expected - names)
    assert not missing, f"wheel lacks {missing[:10]}"
    assert any(n.endswith("entry_points.txt") for n in names)


def test_installed_wheel_imports_every_registered_component(wheel, tmp_path):
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, timeout=300)
    code = (
        "import sys; sys.path.insert(0, sys.argv[1]);"
        "import unlearnkit, unlearnkit.methods as m, unlearnkit.metrics as me, unlearnkit.cli;"
        "assert unlearnkit.__file__.startswith(sys.argv[1]), unlearnkit.__file__;"
        "[m.METHODS.build(n) for n in m.METHODS.names()];"
        "from unlearnkit.config.loader import resolve_config_path; resolve_config_path('digits_random10');"
        "print(len(m.METHODS), len(me.METRICS))"
    )
    out = subprocess.run([sys.executable, "-c", code, str(target)], capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    from unlearnkit.methods import METHODS
    from unlearnkit.metrics import METRICS

    assert out.stdout.split() == [str(len(METHODS)), str(len(METRICS))]
