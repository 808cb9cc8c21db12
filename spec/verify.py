"""verify: check the notes' claims against the implementation and write the ledger.

  verify                          every section, slow checks included, into report/
  verify --section cnn            one section (a registry file's stem; repeatable); its line
                                  coverage counts the notes' blocks (\\section or \\subsection
                                  up to the next heading) that its claims stand in
  verify --claim cnn.output-size  one claim's tests alone; prints the claim, its verdict and
                                  severity, the evidence and each test's outcome
  verify --list                   the sections and their claims by verdict (runs no test)
  verify --fast -- -x             leave out the slow checks; arguments after -- go to pytest

Which checkout: the one this command was installed from (an editable install), whatever the
current directory; each run prints it.
Which notes: --notes PATH when given (a missing or unreadable file is a usage error), else
../shared/notes/machine-perception-summary.tex beside the checkout when it exists; without it the
run goes on without line coverage. Each run prints which file it reads.

Output: ledger.json, ledger.md, index.html, figures/ and a copy of benchmarks.json (from the
benchmark gate) in --out, by default report/ of the checkout, with a list of them (.verify-files);
verify writes nothing else, and nowhere else.
The run writes into a hidden temporary folder in --out and moves its files into place at the end:
an interrupted or crashed run leaves the previous report as it was. --out refuses a folder that holds
anything but a previous report. A --claim run prints and keeps no report unless --out is given.

Exit status: 0 every claim confirmed (with --fast: no claim failed; the claims its slow checks back
are listed as untested), 1 a claim or a test failed, a testable claim was left untested (a skipped
backing test) or the run broke off, 2 a usage error (reported before any test runs), 130 interrupted.
"""

from __future__ import annotations

import argparse
import difflib
import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
from pathlib import Path

from spec.registry import VERDICTS, RegistryError, load_registry, parse_lines

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_NOTES = ROOT.parent / "shared" / "notes" / "machine-perception-summary.tex"
DEFAULT_OUT = ROOT / "report"
# What verify writes into its output folder; mutation/ is spec.mutation's, kept beside it in report/.
REPORT_FILES = ("ledger.json", "ledger.md", "index.html", "benchmarks.json")
# folders of the report that other tools of the project write into (the mutation runners' reports)
REPORT_DIRS = {"figures": (".png",), "mutation": (".txt", ".json")}
PARTIAL = ".verify-partial-"  # a run in progress (or one killed outright) writes here
MANIFEST = ".verify-files"     # what the last run installed: a later --out accepts those names too
DEVICE_RE = re.compile(r"^(?:cpu|all|cuda(?::\d+)?)$")
_HEADING = re.compile(r"\\(?:sub)*section\*?\{")


class UsageError(Exception):
    """A bad command line: reported with exit status 2 before any test runs."""


# --------------------------------------------------------------------------- the command line

def parser() -> argparse.ArgumentParser:
    here = f"\nThis command: checkout {ROOT}\n              default notes {DEFAULT_NOTES}\n"
    ap = argparse.ArgumentParser(prog="verify", description=__doc__ + here,
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 usage="verify [--section STEM | --claim ID | --list] [options] [-- PYTEST ARGS]")
    ap.add_argument("--section", action="append", default=[], metavar="STEM",
                    help="verify one section, a registry file's stem (cnn, flows, ...); repeatable")
    ap.add_argument("--claim", action="append", default=[], metavar="ID",
                    help="run one claim's tests alone and print its verdict, evidence and tests; repeatable")
    ap.add_argument("--list", action="store_true", help="list the sections with their claim counts; run nothing")
    ap.add_argument("--notes", default=None, metavar="PATH", help="the notes' .tex (default: see above)")
    ap.add_argument("--out", default=None, metavar="DIR", help="report folder, relative to the current directory (default report/ of the checkout)")
    ap.add_argument("--device", default="all", help="cpu, cuda, cuda:N or all (default all)")
    ap.add_argument("--fast", action="store_true", help="leave out the slow checks")
    ap.add_argument("-n", dest="workers", default=None,
                    help="xdist workers: auto (default), a number, or 0 for a serial run (default 0 with --claim)")
    return ap


def split_argv(argv: list[str]) -> tuple[list[str], list[str]]:
    """verify's own arguments, and the pytest arguments after ``--``."""
    if "--" in argv:
        i = argv.index("--")
        return argv[:i], argv[i + 1:]
    return argv, []


def resolve_notes(given: str | None) -> tuple[Path | None, str]:
    """The notes file and a sentence saying how it was chosen; UsageError for a bad explicit one."""
    path = Path(given).expanduser().resolve() if given else DEFAULT_NOTES
    how = "given by --notes" if given else "the default beside the checkout"
    if not path.is_file():
        if given:
            raise UsageError(f"--notes: {given!r} is not a file")
        return None, f"not found at {path}: no line coverage (pass --notes PATH)"
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"notes file {path} ({how}) cannot be read as UTF-8 text: {e}") from None
    if "\\section" not in text:
        how += "; warning: it has no \\section, so no line counts as content"
    return path, how


def check_out(out: Path) -> None:
    """UsageError unless ``out`` is absent, empty or a previous report (only what verify writes)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out: {out} exists and is not a folder")
    if out == ROOT or out in ROOT.parents:
        raise UsageError(f"--out: {out} holds the checkout; choose a folder of its own")
    if not out.is_dir():
        return
    manifest = out / MANIFEST
    installed = set(manifest.read_text(encoding="utf-8").split("\n")) if manifest.is_file() else set()
    foreign = []
    for entry in sorted(out.iterdir()):
        if (entry.name in REPORT_FILES and entry.is_file()) or (entry.name.startswith(PARTIAL) and entry.is_dir()) \
                or entry.name == MANIFEST or (entry.name in installed and entry.name not in REPORT_DIRS):
            continue
        suffixes = REPORT_DIRS.get(entry.name)
        if suffixes and entry.is_dir() and all(f.is_file() and f.suffix in suffixes for f in entry.iterdir()):
            continue
        foreign.append(entry.name + ("/" if entry.is_dir() else ""))
    if foreign:
        raise UsageError(f"--out: {out} holds files verify did not write ({', '.join(foreign[:8])}"
                         f"{', ...' if len(foreign) > 8 else ''}); give an empty or new folder, or a previous report")


def check_device(device: str) -> None:
    if not DEVICE_RE.match(device):
        raise UsageError(f"--device: expected cpu, cuda, cuda:N or all, got {device!r}")
    if device.startswith("cuda"):
        import torch

        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        index = int(device.partition(":")[2] or 0)
        if index >= count:
            raise UsageError(f"--device {device}: {count} CUDA device(s) available")


def check_workers(workers: str) -> None:
    if workers not in ("auto", "logical") and not (workers.isdigit()):
        raise UsageError(f"-n: expected auto, logical or a number of workers, got {workers!r}")


def check_selection(claims: dict, sections: list[str], ids: list[str]) -> None:
    stems = sorted({c.chapter for c in claims.values()})
    bad = [s for s in sections if s not in stems]
    if bad:
        raise UsageError(f"--section: unknown section(s) {', '.join(bad)}; the sections are: {', '.join(stems)}")
    for cid in ids:
        if cid not in claims:
            close = difflib.get_close_matches(cid, list(claims), n=3, cutoff=0.6)
            stem = cid.split(".", 1)[0]
            hint = (f"did you mean {', '.join(close)}?" if close else
                    f"claims of {stem}: verify --list, or spec/claims/{stem}.toml" if stem in stems else
                    f"ids are <section>.<name>; the sections are: {', '.join(stems)}")
            raise UsageError(f"--claim: unknown claim id {cid!r}; {hint}")
    if sections and ids:
        raise UsageError("--claim and --section select tests in different ways: give one of them")


# --------------------------------------------------------------------------- what a run reports

def section_scope(text: str, claims: dict, stems: set[str]) -> set[int]:
    """Content lines of every heading block (a \\section or \\subsection up to the next heading) in
    which a claim of ``stems`` stands: the part of the notes a section's run answers for."""
    from spec.coverage import content_lines

    content = content_lines(text)
    block, blocks, in_doc = 0, {}, False
    for no, raw in enumerate(text.splitlines(), start=1):
        line = re.sub(r"(?<!\\)%.*$", "", raw)
        if "\\begin{document}" in line:
            in_doc = True
        if in_doc and _HEADING.search(line):
            block += 1
        blocks[no] = block
    mine = {blocks[n] for c in claims.values() if c.chapter in stems for n in c.line_numbers() if n in content}
    return {n for n in content if blocks[n] in mine}


def restrict_coverage(ledger: dict, notes: Path, claims: dict, stems: set[str]) -> None:
    """Rewrite the ledger's coverage for a section run: the section's own lines of the notes, each
    covered when any claim of the registry covers it (the same test as in a full run)."""
    from spec.coverage import content_lines

    text = notes.read_text(encoding="utf-8")
    scope = section_scope(text, claims, stems)
    content = content_lines(text)
    covered = set().union(*(c.line_numbers() for c in claims.values())) if claims else set()
    sections: dict[str, dict] = {}
    for n in sorted(scope):
        s = sections.setdefault(content[n][0], {"section": content[n][0], "lines": 0, "covered": 0, "uncovered": []})
        s["lines"] += 1
        if n in covered:
            s["covered"] += 1
        else:
            s["uncovered"].append(n)
    n_covered = sum(n in covered for n in scope)
    ledger["summary"].update(notes_lines=len(scope), notes_lines_covered=n_covered)
    cov = ledger.setdefault("coverage", {})
    cov.update(notes_lines=len(scope), notes_lines_covered=n_covered, sections=list(sections.values()),
               scope={"sections": sorted(stems), "lines": _ranges(sorted(scope))})


def _ranges(nums: list[int]) -> str:
    out, start = [], None
    for i, n in enumerate(nums):
        if start is None:
            start = n
        if i + 1 == len(nums) or nums[i + 1] != n + 1:
            out.append(f"{start}-{n}" if n != start else str(n))
            start = None
    return ", ".join(out)


def summary_text(ledger: dict, out: Path | None) -> str:
    s = ledger["summary"]
    lines = [
        "",
        "=" * 78,
        f"Machine Perception notes: {s['claims']} claims checked on {ledger['environment']['device']}",
        f"  holds {s['holds']}   false as written {s['false-as-written']}   conditional {s['conditional']}"
        f"   not testable {s['not-testable']}   FAILING {s['failing']}",
    ]
    if all(k in s for k in ("error", "slip", "fine-print")):
        lines.append(f"  findings by severity: error {s['error']}   slip {s['slip']}   fine print {s['fine-print']}")
    if s["notes_lines"]:
        scope = ledger.get("coverage", {}).get("scope")
        where = f" (the lines of {', '.join(scope['sections'])})" if scope else ""
        lines.append(f"  notes lines covered {s['notes_lines_covered']}/{s['notes_lines']} "
                     f"({100 * s['notes_lines_covered'] / s['notes_lines']:.0f} %){where}")
    else:
        lines.append("  notes file not found: no line coverage (pass --notes PATH)")
    status: dict[str, int] = {}
    for c in ledger["claims"]:
        status[c["status"]] = status.get(c["status"], 0) + 1
    lines.append("  status: " + ", ".join(f"{k} {v}" for k, v in sorted(status.items())))
    if "mutants_caught" in s:
        lines.append(f"  claims shown to catch a hand-made mutant: {s['mutants_caught']}/{s['claims'] - s['not-testable']}"
                     f" (python -m spec.claim_mutants --stale refreshes the record)")
    from spec.report import severity_summary_lines

    lines += severity_summary_lines(ledger, width=78)  # errors first, then slips, then fine print
    failing = [c["id"] for c in ledger["claims"] if c["status"] == "failing"]
    if failing:
        lines.append(textwrap.shorten("FAILING: " + ", ".join(failing), 300))
    untested = [c["id"] for c in ledger["claims"] if c["status"] == "untested" and c["verdict"] != "not-testable"]
    if untested:
        lines.append(textwrap.shorten("untested (no backing test ran): " + ", ".join(untested), 300))
    if out is not None:
        lines.append(f"Reports: {out / 'ledger.json'}, {out / 'ledger.md'}, {out / 'index.html'}")
    lines.append("=" * 78)
    return "\n".join(lines)


def claim_text(entry: dict, claim, notes: Path | None) -> str:
    """What a reader checking one formula wants: the claim, the notes' lines, the verdict and the tests."""
    severity = entry.get("severity") or claim.severity
    head = f"{entry['id']}: {entry['verdict']}" + (f" ({severity})" if severity else "") + f", {entry['status']}"
    lines = ["", head, f"  section: {entry['section']} ({claim.file}), notes lines {entry['lines']}",
             f"  statement: {entry['statement']}"]
    if notes is not None:
        text = notes.read_text(encoding="utf-8").splitlines()
        nums = sorted(n for n in parse_lines(entry["lines"]) if n <= len(text))
        for n in nums[:12]:
            lines.append(f"  {n:5d} | {text[n - 1].rstrip()[:150]}")
        if len(nums) > 12:
            lines.append(f"        ... {len(nums) - 12} more lines")
    for key in ("correction", "reason", "evidence"):
        if entry.get(key):
            lines.append(f"  {key}: {entry[key]}")
    if entry["tests"]:
        lines.append("  tests:")
        for t in entry["tests"]:
            lines.append(f"    {t['outcome']:8s} {t['role']:9s} {t['nodeid']} ({t['seconds']:.2f} s)")
    elif entry["verdict"] == "not-testable":
        lines.append("  tests: none (not testable)")
    else:
        lines.append("  tests: none ran")
    return "\n".join(lines)


def list_text(claims: dict) -> str:
    rows: dict[str, dict[str, int]] = {}
    for c in claims.values():
        row = rows.setdefault(c.chapter, dict.fromkeys(VERDICTS, 0))
        row[c.verdict] += 1
    head = f"{'section':16s} {'claims':>6s} " + " ".join(f"{v:>16s}" for v in VERDICTS)
    lines = [head, "-" * len(head)]
    for stem, row in sorted(rows.items()):
        lines.append(f"{stem:16s} {sum(row.values()):6d} " + " ".join(f"{row[v]:16d}" for v in VERDICTS))
    total = {v: sum(r[v] for r in rows.values()) for v in VERDICTS}
    lines.append(f"{'all':16s} {sum(total.values()):6d} " + " ".join(f"{total[v]:16d}" for v in VERDICTS))
    return "\n".join(lines)


# --------------------------------------------------------------------------- the run

def pytest_command(args, ledger_dir: Path, notes: Path | None, extra: list[str]) -> list[str]:
    workers = args.workers or ("0" if args.claim else "auto")
    # --rootdir and the config file pin pytest to the checkout wherever --out points (pytest would
    # otherwise root itself at the common ancestor of the paths on its command line); every option
    # value is attached with '=' for the same reason. The slow tests are deselected by the
    # project's addopts, so a full run selects them back explicitly.
    cmd = [sys.executable, "-m", "pytest", "-q", f"--rootdir={ROOT}", f"--config-file={ROOT / 'pyproject.toml'}",
           "-p", "no:cacheprovider", "--disable-warnings", f"--ledger={ledger_dir}", f"--device={args.device}",
           "-m", "not slow" if args.fast else "slow or not slow"]
    cmd += ["-p", "no:xdist"] if workers == "0" else ["-n", workers]
    cmd += [f"--claims-section={s}" for s in args.section]
    cmd += [f"--claims-id={c}" for c in args.claim]
    if notes is not None:
        cmd.append(f"--notes={notes}")
    return cmd + extra


def install(tmp: Path, out: Path) -> None:
    """Move the finished report from ``tmp`` into ``out`` by renaming, replacing the previous one:
    whatever the run wrote (the ledger files, figures/, the benchmarks copy), and a manifest of it."""
    old = tmp / ".replaced"
    old.mkdir()
    names = sorted(e.name for e in tmp.iterdir() if e != old)
    previous = out / "figures"
    if previous.is_dir() and "figures" not in names:  # a run without figures leaves none from before
        os.replace(previous, old / "figures")
    for name in names:
        if (out / name).is_dir() and not (out / name).is_symlink():
            os.replace(out / name, old / name)
        os.replace(tmp / name, out / name)
    (out / MANIFEST).write_text("\n".join(names) + "\n", encoding="utf-8")


def _terminate(signum, frame):
    # SIGTERM (a CI timeout, say) ends the run like Ctrl-C: pytest is stopped, the report kept.
    raise KeyboardInterrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


def main(argv=None) -> int:
    own, extra = split_argv(list(sys.argv[1:] if argv is None else argv))
    args = parser().parse_args(own)
    try:
        try:
            claims = load_registry(ROOT / "spec" / "claims")
        except RegistryError as e:
            raise UsageError(f"the claim registry is malformed: {e}") from None
        if args.list:
            print(list_text(claims))
            return 0
        check_selection(claims, args.section, args.claim)
        check_device(args.device)
        if args.workers is not None:
            check_workers(args.workers)
        notes, how = resolve_notes(args.notes)
        keep_report = not args.claim or args.out is not None
        out = Path(args.out).expanduser().resolve() if args.out else DEFAULT_OUT
        if keep_report:
            check_out(out)
    except UsageError as e:
        print(f"verify: error: {e}", file=sys.stderr)
        return 2

    print(f"verify: checkout {ROOT} (the one this command runs from)")
    print(f"verify: notes {notes} ({how})" if notes else f"verify: notes {how}")
    if keep_report:
        # Aside, but inside the output folder: on the same file system, so that the files move into
        # place by renaming, and nowhere verify was not asked to write.
        out.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=out))
    else:
        tmp = Path(tempfile.mkdtemp(prefix="verify-claim-"))
    try:
        bench = out / "benchmarks.json" if (out / "benchmarks.json").is_file() else DEFAULT_OUT / "benchmarks.json"
        if keep_report and bench.is_file():
            shutil.copy2(bench, tmp / "benchmarks.json")
        cmd = pytest_command(args, tmp, notes, extra)
        print("+", shlex.join(cmd), flush=True)
        previous = signal.signal(signal.SIGTERM, _terminate) if _main_thread() else None
        try:
            rc = subprocess.run(cmd, cwd=ROOT).returncode
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        if rc == 4:
            print("verify: pytest rejected the command line (see above)", file=sys.stderr)
            return 2
        if rc not in (0, 1) or not (tmp / "ledger.json").is_file():
            print(f"verify: the run broke off (pytest exit {rc}) without a complete ledger"
                  + (f"; the report in {out} is unchanged" if keep_report else ""), file=sys.stderr)
            return 1
        ledger = json.loads((tmp / "ledger.json").read_text(encoding="utf-8"))
        if args.section and notes is not None:
            from spec.report import write_reports

            restrict_coverage(ledger, notes, claims, set(args.section))
            write_reports(ledger, tmp, notes)
        if args.claim:
            by_id = {c["id"]: c for c in ledger["claims"]}
            for cid in args.claim:
                print(claim_text(by_id[cid], claims[cid], notes))
            failed = rc != 0 or any(by_id[c]["status"] == "failing" for c in args.claim)
        else:
            # DESIGN.md: 0 only when every claim is confirmed. Without --fast a testable claim left
            # untested (a backing test skipped, say for a missing reference library) is not.
            untested = [c["id"] for c in ledger["claims"]
                        if c["status"] == "untested" and c["verdict"] != "not-testable"]
            failed = rc != 0 or ledger["summary"]["failing"] > 0 or bool(untested and not args.fast)
        if keep_report:
            install(tmp, out)
        if not args.claim:
            print(summary_text(ledger, out))
        elif keep_report:
            print(f"\nReports: {out / 'ledger.json'}, {out / 'ledger.md'}, {out / 'index.html'}")
        if rc != 0:
            print(f"verify: pytest exit {rc}: a test failed (the claims-meta check among them, if listed above)")
        elif failed and not args.claim and not args.fast:
            print(f"verify: {len(untested)} testable claim(s) left untested (see above): not every claim is confirmed")
        return 1 if failed else 0
    except KeyboardInterrupt:
        print("\nverify: interrupted" + (f"; the report in {out} is unchanged" if keep_report else ""), file=sys.stderr)
        return 130
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
