#!/usr/bin/env python3
"""Fail CI when a test it is meant to run was skipped.

Usage: python3 .ci/check_skips.py STEP=REPORT.xml [STEP=REPORT.xml ...] [--allow .ci/allowed_skips.txt]

Reads the JUnit XML reports that pytest wrote (``--junitxml``) for each CI step and classifies every skipped test:

* **ran in another step**: the same test passed in another step of this CI run (e.g. the ResNet-18 tests skip in the
  main environment, which has no working torchvision, and pass in the ``vision`` step);
* **allowed**: it matches an entry of the allow-list file (test-id glob | reason regex | justification);
* otherwise **not justified**: a dependency or data set that CI should have provided is missing. Exit status 1.

Prints every skip with its reason and verdict, the count per verdict, and a closing line
``CI: N passed, N failed, N skipped`` over all steps. Standard library only (runs before or without any venv).
"""

from __future__ import annotations

import argparse
import fnmatch
import re
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Case:
    step: str
    test_id: str
    outcome: str  # passed, failed, skipped
    reason: str = ""


def read_report(step: str, path: Path) -> list[Case]:
    """Test cases of one JUnit XML file (pytest's ``--junitxml``); a missing or unreadable file is an error."""
    try:
        root = ET.parse(path).getroot()
    except (OSError, ET.ParseError) as err:
        raise SystemExit(f"check_skips: cannot read the {step} report {path}: {err} (did that pytest run start?)")
    cases = []
    for tc in root.iter("testcase"):
        test_id = f"{tc.get('classname', '')}::{tc.get('name', '')}"
        skipped = tc.find("skipped")
        if skipped is not None:
            cases.append(Case(step, test_id, "skipped", (skipped.get("message") or skipped.text or "").strip()))
        elif tc.find("failure") is not None or tc.find("error") is not None:
            cases.append(Case(step, test_id, "failed"))
        else:
            cases.append(Case(step, test_id, "passed"))
    return cases


def read_allow_list(path: Path | None) -> list[tuple[str, re.Pattern[str], str]]:
    """(test-id glob, reason regex, justification) per non-comment line ``glob | regex | justification``."""
    if path is None or not path.is_file():
        return []
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = [p.strip() for p in line.split("|", 2)]
        if len(parts) != 3 or not all(parts):
            raise SystemExit(f"check_skips: {path}:{n}: expected 'test-id glob | reason regex | justification'")
        out.append((parts[0], re.compile(parts[1]), parts[2]))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="fail when a CI test was skipped without a justification")
    ap.add_argument("reports", nargs="+", help="STEP=path/to/junit.xml")
    ap.add_argument("--allow", type=Path, default=None, help="allow-list file of justified skips")
    args = ap.parse_args(argv)
    cases: list[Case] = []
    for item in args.reports:
        step, _, path = item.partition("=")
        if not path:
            step, path = Path(item).stem, item
        cases += read_report(step, Path(path))
    allow = read_allow_list(args.allow)
    passed_in = {}
    for c in cases:
        if c.outcome == "passed":
            passed_in.setdefault(c.test_id, c.step)
    skips = [c for c in cases if c.outcome == "skipped"]
    verdicts = {"ran in another step": [], "allowed": [], "NOT JUSTIFIED": []}
    for c in skips:
        other = passed_in.get(c.test_id)
        if other is not None and other != c.step:
            verdicts["ran in another step"].append(f"{c.test_id} [{c.step}: {c.reason}] -> passed in step '{other}'")
            continue
        hit = next(((g, why) for g, rx, why in allow if fnmatch.fnmatch(c.test_id, g) and rx.search(c.reason)), None)
        if hit is not None:
            verdicts["allowed"].append(f"{c.test_id} [{c.step}: {c.reason}] -> {hit[1]}")
        else:
            verdicts["NOT JUSTIFIED"].append(f"{c.test_id} [{c.step}: {c.reason}]")
    print(f"\n== CI skip check: {len(skips)} skipped test(s) over {len({c.step for c in cases})} step(s) ==")
    for verdict, items in verdicts.items():
        print(f"{verdict}: {len(items)}")
        for it in items:
            print(f"  - {it}")
    bad = verdicts["NOT JUSTIFIED"]
    if bad:
        print(f"check_skips: {len(bad)} test(s) that CI must run were skipped: install what they need in .ci/run "
              "(or, if the skip is right in CI, add it to .ci/allowed_skips.txt with the reason)")
    n_pass = sum(c.outcome == "passed" for c in cases)
    n_fail = sum(c.outcome == "failed" for c in cases)
    print(f"CI: {n_pass} passed, {n_fail} failed, {len(skips)} skipped")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
