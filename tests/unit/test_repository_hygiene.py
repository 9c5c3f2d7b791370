"""The repository names no absolute path of one machine (a developer's home, the workspace, a mounted drive): code,
tests, configs and docs must find files relative to the checkout (tests: testkit.shared_data_dir)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
# written in pieces so that this file does not match itself
MACHINE_PATHS = re.compile("|".join([
    r"(?<![\w.~-])/" + "work/",          # the workspace of the team's machines
    r"(?<![\w.~-])/" + r"home/[\w.-]+",  # a user's home
    r"(?<![\w.~-])/" + "root/",          # root's home
    r"(?<![\w.~-])/" + r"Users/[\w.-]+",  # macOS homes
    r"(?<![\w.~-])/" + "mnt/",
    r"\b[A-Za-z]:\\" + r"\\?Users",      # Windows homes
]))


def _tracked_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-z"], capture_output=True, check=True, timeout=60)
        files = [ROOT / p for p in out.stdout.decode().split("\0") if p]
    except (OSError, subprocess.CalledProcessError):  # not a git checkout (an sdist): every file but caches
        files = [p for p in ROOT.rglob("*") if p.is_file() and not any(
            part in {".git", ".venv", "__pycache__", "build", "dist", "runs"} or part.endswith(".egg-info")
            for part in p.relative_to(ROOT).parts)]
    return [p for p in files if p.is_file()]


def test_no_absolute_machine_path_in_the_repository():
    files = _tracked_files()
    assert len(files) > 50, "the file listing found almost nothing"
    hits = []
    for path in files:
        data = path.read_bytes()
        if b"\0" in data[:8192]:  # binary (weights, archives)
            continue
        for n, line in enumerate(data.decode("utf-8", errors="replace").splitlines(), 1):
            m = MACHINE_PATHS.search(line)
            if m:
                hits.append(f"{path.relative_to(ROOT)}:{n}: {m.group(0)!r} in {line.strip()[:120]!r}")
    assert not hits, "absolute machine paths (use a path relative to the checkout):\n" + "\n".join(hits[:30])


def test_the_pattern_catches_what_it_should():
    for bad in ('TOFU = Path("/' + 'work/shared/data/tofu")', "see /" + "home/alice/runs", "cd /" + "root/x",
                "/" + "Users/bob/data", "C:\\" + "Users\\bob", "mount /" + "mnt/data"):
        assert MACHINE_PATHS.search(bad), bad
    for ok in ("../shared/data/tofu", "/tmp/unlearnkit-bench", "src/unlearnkit/work/x.py", "~/.cache/unlearnkit",
               "https://example.org/home/page"):
        assert not MACHINE_PATHS.search(ok), ok
