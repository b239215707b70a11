"""The Autobahn|Testsuite fuzzing client (cases 1-10) against a node's echo socket.

    .venv/bin/python -m tests.autobahn [--cases 1-10] [--report DIR]

Autobahn's PyPI package is Python 2.7 code (autobahntestsuite 0.8 on Twisted), and Debian 12
has no Python 2.7: point `PYTHON2` at one (by default pyenv's 2.7.18 at
~/.pyenv/versions/2.7.18/bin/python, else `python2.7` on PATH). The suite is installed once
into a virtualenv of its own (`AUTOBAHN_VENV`, default ~/.cache/chat-autobahn/venv). The node
runs with `--echo` and limits raised for the suite's floods (its case 9 sends up to 16 MiB
messages and thousands of frames); everything else is as shipped. Prints the count of each
outcome and every case that did not pass; exits 1 on a FAILED case. The report goes to
results/autobahn/ (untracked) unless --report says otherwise.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from gateway.processes import LOOPBACK, start_node

ROOT = Path(__file__).parents[1]
PYENV_PYTHON2 = Path.home() / ".pyenv" / "versions" / "2.7.18" / "bin" / "python"
PYTHON2 = os.environ.get("PYTHON2") or (
    str(PYENV_PYTHON2) if PYENV_PYTHON2.exists() else shutil.which("python2.7") or "")
VENV = Path(os.environ.get("AUTOBAHN_VENV",
                           Path.home() / ".cache" / "chat-autobahn" / "venv"))
NO_PYTHON2 = (
    "Autobahn|Testsuite runs on Python 2.7, which Debian 12 does not package: build one with "
    "pyenv (https://github.com/pyenv/pyenv#installation, then `pyenv install 2.7.18`) and run "
    "again, or set PYTHON2 to any Python 2.7 interpreter")
LIMITS = ["--max-frame", str(17 * 2**20), "--max-fragments", "100000", "--frame-rate",
          "1000000", "--frame-burst", "1000000", "--max-buffer", str(64 * 2**20)]


def wstest() -> Path:
    """The suite's `wstest`, installed on first use."""
    binary = VENV / "bin" / "wstest"
    if not binary.exists() and not os.access(PYTHON2, os.X_OK):
        raise SystemExit(NO_PYTHON2)
    if not binary.exists():
        print(f"installing autobahntestsuite into {VENV} (once) ...", flush=True)
        subprocess.run([PYTHON2, "-m", "pip", "install", "-q", "--user", "virtualenv"],
                       check=True)
        subprocess.run([PYTHON2, "-m", "virtualenv", "-q", str(VENV)], check=True)
        subprocess.run([str(VENV / "bin" / "pip"), "install", "-q", "autobahntestsuite"],
                       check=True)
    return binary


def run(cases: list[str], report_dir: Path) -> Counter[str]:
    with tempfile.TemporaryDirectory(prefix="autobahn-") as scratch:
        run_dir = Path(scratch)
        node = start_node(run_dir, "autobahn", None,
                          ["--echo", *LIMITS, "--log-level", "WARNING"])
        try:
            spec = run_dir / "fuzzingclient.json"
            spec.write_text(json.dumps({
                "outdir": str(report_dir),
                "servers": [{"agent": "chat-node",
                             "url": f"ws://{LOOPBACK}:{node.port}/ws/echo"}],
                "cases": cases, "exclude-cases": ["12.*", "13.*"], "exclude-agent-cases": {},
            }))
            subprocess.run([str(wstest()), "-m", "fuzzingclient", "-s", str(spec)],
                           check=True, cwd=run_dir, stdout=subprocess.DEVNULL)
        finally:
            node.stop()
    results = json.loads((report_dir / "index.json").read_text())["chat-node"]
    outcomes: Counter[str] = Counter()
    for case, result in sorted(results.items(), key=lambda item: _case_key(item[0])):
        outcomes[result["behavior"]] += 1
        if result["behavior"] not in ("OK", "INFORMATIONAL"):
            print(f"  {case}: {result['behavior']} (close: {result['behaviorClose']})")
    return outcomes


def _case_key(case: str) -> list[int]:
    return [int(part) for part in case.split(".")]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m tests.autobahn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", default="1-10",
                        help="case groups: 1-10, or a comma list such as 1,2,5.*")
    parser.add_argument("--report", type=Path, default=ROOT / "results" / "autobahn",
                        help="where the suite writes its HTML and JSON report")
    args = parser.parse_args()
    if "-" in args.cases:
        first, last = (int(n) for n in args.cases.split("-"))
        cases = [f"{n}.*" for n in range(first, last + 1)]
    else:
        cases = [c if "." in c else f"{c}.*" for c in args.cases.split(",")]
    outcomes = run(cases, args.report)
    print(" ".join(f"{behavior} {count}" for behavior, count in sorted(outcomes.items())),
          f"(report: {args.report})")
    sys.exit(1 if outcomes["FAILED"] else 0)


if __name__ == "__main__":
    main()
