"""``verify``: run the whole verification (slow checks included) and write the ledger.

    verify [--section cnn ...] [--notes PATH] [--out report] [--device cpu|cuda|all] [--fast] [-n N] [-- PYTEST ARGS]

Writes ``<out>/ledger.json``, ``ledger.md`` and ``index.html`` and prints a one-screen summary.
Exits non-zero when any test fails (a failing claim is never reported as confirmed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def summary_text(ledger: dict, out: Path) -> str:
    s = ledger["summary"]
    lines = [
        "",
        "=" * 78,
        f"Machine Perception notes: {s['claims']} claims checked on {ledger['environment']['device']}",
        f"  holds {s['holds']}   false as written {s['false-as-written']}   conditional {s['conditional']}"
        f"   not testable {s['not-testable']}   FAILING {s['failing']}",
    ]
    if s["notes_lines"]:
        lines.append(f"  notes lines covered {s['notes_lines_covered']}/{s['notes_lines']} "
                     f"({100 * s['notes_lines_covered'] / s['notes_lines']:.0f} %)")
    else:
        lines.append("  notes file not found: no line coverage (pass --notes PATH)")
    status = {}
    for c in ledger["claims"]:
        status[c["status"]] = status.get(c["status"], 0) + 1
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    for verdict in ("false-as-written", "conditional"):
        ids = [c["id"] for c in ledger["claims"] if c["verdict"] == verdict]
        if ids:
            lines.append(f"{verdict} ({len(ids)}), details in ledger.md / index.html:")
            lines += textwrap.wrap(", ".join(ids), 78, initial_indent="  ", subsequent_indent="  ", break_on_hyphens=False)
    failing = [c["id"] for c in ledger["claims"] if c["status"] == "failing"]
    if failing:
        lines.append(textwrap.shorten("FAILING: " + ", ".join(failing), 300))
    untested = [c["id"] for c in ledger["claims"] if c["status"] == "untested" and c["verdict"] != "not-testable"]
    if untested:
        lines.append(textwrap.shorten("untested (no backing test ran): " + ", ".join(untested), 300))
    lines += [f"Reports: {out / 'ledger.json'}, {out / 'ledger.md'}, {out / 'index.html'}", "=" * 78]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="verify", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--section", action="append", default=[], help="verify one section (registry stem, e.g. cnn); repeatable")
    ap.add_argument("--notes", default=None, help="the notes' .tex (default ../shared/notes/machine-perception-summary.tex)")
    ap.add_argument("--out", default=str(ROOT / "report"), help="report directory (default report/)")
    ap.add_argument("--device", default="all", help="cpu, cuda, cuda:N or all (default)")
    ap.add_argument("--fast", action="store_true", help="leave out the slow checks")
    ap.add_argument("-n", dest="workers", default="auto", help="xdist workers (default auto; 0 for a serial run)")
    ap.add_argument("pytest_args", nargs="*", help="extra pytest arguments (after --)")
    args = ap.parse_args(argv)

    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    for name in ("ledger.json", "ledger.md", "index.html"):
        (out / name).unlink(missing_ok=True)
    cmd = [sys.executable, "-m", "pytest", "-q", "-n", str(args.workers), "--ledger", str(out),
           "--device", args.device, "-m", "not slow" if args.fast else ""]
    if args.workers == "0":
        cmd[cmd.index("-n"): cmd.index("-n") + 2] = ["-p", "no:xdist"]
    for s in args.section:
        cmd += ["--claims-section", s]
    if args.notes:
        cmd += ["--notes", args.notes]
    cmd += args.pytest_args
    print("+", " ".join(cmd), flush=True)
    rc = subprocess.run(cmd, cwd=ROOT).returncode
    ledger_file = out / "ledger.json"
    if not ledger_file.exists():
        print(f"verify: pytest exited {rc} without writing a ledger", file=sys.stderr)
        return rc or 1
    print(summary_text(json.loads(ledger_file.read_text()), out))
    return rc


if __name__ == "__main__":
    raise SystemExit(main())
