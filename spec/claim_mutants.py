"""Claim mutants: for every claim, a wrong implementation (or a wrong claim) that its tests must catch.

    python -m spec.claim_mutants [SECTION ...] [--claim ID ...] [--out report/mutation] [--jobs N]

``spec/mutants/<section>.toml`` names, for each testable claim of ``spec/claims/<section>.toml``,
one or more hand-made mutants of the claim's subject:

    [[mutant]]
    claim = "cnn.output-size"              # or claims = ["cnn.a", "cnn.b"]: each claim's tests must kill it
    file = "impl/cnn.py"
    old = "(h + 2 * padding - k) // stride + 1"     # occurs exactly once in file
    new = "(h + 2 * padding - k) // stride"
    why = "drops the + 1 of the output-size formula"

The subject is the code the claim is about: a function of impl/ (remove a component, swap an
order, drop a term, feed nothing back in a sampling loop, use the wrong evaluation point), or, for
a claim that a derivation checks, the notes' formula as the test writes it (never the reference it
is compared with, nor the assertion). Operator-level mutants (spec/mutation.py) sample the code at
random; these are the wrong implementations a reader of the claim would fear.

Each mutant is applied in a scratch copy of the checkout and, for each claim it names, the tests
whose markers name that claim run there (``pytest --claims-id``, the derandomised ``ci`` profile,
slow tests included only with ``slow = true``). A mutant is *killed* for a claim when one of those
tests fails, *timeout* when they run past ``--timeout`` (an endless loop: caught, but say so),
*survived* when they all pass, and *broken* when pytest cannot even collect them (a patch that does
not import is no mutant). Writes ``<out>/claims-<section>.json`` (default spec/mutants/records/,
committed: the ledger reads it) and prints the survivors; exits 1 when any mutant survives or is
broken.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import tomllib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
MUTANTS_DIR = ROOT / "spec" / "mutants"
# The verdicts are committed beside the mutants, so that a fresh clone's ledger shows them; each
# carries a fingerprint, and one whose code or tests have changed since reads as "not run".
RECORDS = "spec/mutants/records"
FIELDS = {"claim", "claims", "file", "old", "new", "why", "slow"}


class MutantError(ValueError):
    """A mutant entry that cannot be applied as written."""


@dataclass(frozen=True)
class Mutant:
    section: str
    index: int  # position in its file, from 1
    claims: tuple[str, ...]
    file: str
    old: str
    new: str
    why: str
    slow: bool = False

    @property
    def name(self) -> str:
        return f"{self.section}#{self.index}"


def load_mutants(directory: Path = MUTANTS_DIR, root: Path = ROOT, sections=None) -> list[Mutant]:
    """Every entry of ``directory/<section>.toml`` (all sections, or those named), checked against
    the files it patches (MutantError names the entry)."""
    out = []
    for path in sorted(Path(directory).glob("*.toml")):
        section = path.stem
        if sections is not None and section not in sections:
            continue
        with open(path, "rb") as f:
            tables = tomllib.load(f).get("mutant", [])
        for i, t in enumerate(tables, 1):
            where = f"{path.name} mutant {i}"
            extra = set(t) - FIELDS
            if extra:
                raise MutantError(f"{where}: unknown field(s) {sorted(extra)}; allowed: {sorted(FIELDS)}")
            if ("claim" in t) == ("claims" in t):
                raise MutantError(f"{where}: give exactly one of claim = \"id\" or claims = [ids]")
            claims = (t["claim"],) if "claim" in t else tuple(t["claims"])
            if not claims or not all(isinstance(c, str) and c.startswith(section + ".") for c in claims):
                raise MutantError(f"{where}: claims must be ids of {section}.toml, got {list(claims)}")
            for key in ("file", "old", "new", "why"):
                if not isinstance(t.get(key), str) or not t[key].strip():
                    raise MutantError(f"{where}: {key} must be a non-empty string")
            if t["old"] == t["new"]:
                raise MutantError(f"{where}: new equals old")
            target = root / t["file"]
            if not target.is_file() or Path(t["file"]).parts[0] not in ("impl", "spec", "properties", "golden"):
                raise MutantError(f"{where}: file {t['file']!r} is not a file of impl/, spec/, properties/ or golden/")
            n = target.read_text().count(t["old"])
            if n != 1:
                raise MutantError(f"{where}: old occurs {n} times in {t['file']} (must be exactly once)")
            out.append(Mutant(section, i, claims, t["file"], t["old"], t["new"], t["why"].strip(),
                              bool(t.get("slow", False))))
    return out


def fingerprint(m: Mutant, claim: str, files, root: Path = ROOT) -> str:
    """What a run's verdict on (mutant, claim) depends on: the patch, the patched file and the
    claim's test files. The ledger shows a recorded verdict only while this is unchanged."""
    h = hashlib.sha256()
    for part in (claim, m.file, m.old, m.new):
        h.update(part.encode() + b"\0")
    for f in (m.file, *sorted(files)):
        p = root / f
        h.update(f.encode() + b"\0" + (p.read_bytes() if p.is_file() else b"") + b"\0")
    return h.hexdigest()[:16]


def ledger_mutants(test_files: dict, runs_dir: Path | None = None, root: Path = ROOT,
                   sections=None) -> dict[str, list[dict]]:
    """claim id -> [{"file", "why", "status"}] for the ledger. test_files: claim id -> its test files
    (as the run that writes the ledger saw them). status is the last ``python -m spec.claim_mutants``
    verdict for the mutant as it is now, or "not run" (never run, or the code or tests changed since)."""
    runs_dir = root / RECORDS if runs_dir is None else Path(runs_dir)
    recorded = {}
    for p in sorted(runs_dir.glob("claims-*.json")):
        try:
            rows = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        for r in rows if isinstance(rows, list) else []:
            if isinstance(r, dict) and {"claim", "fingerprint", "status"} <= set(r):
                recorded[(r["claim"], r["fingerprint"])] = r["status"]
    out: dict[str, list[dict]] = {}
    for m in load_mutants(root / "spec" / "mutants", root=root, sections=sections):
        for c in m.claims:
            status = recorded.get((c, fingerprint(m, c, test_files.get(c, ()), root)), "not run")
            out.setdefault(c, []).append({"file": m.file, "why": m.why, "status": status})
    return out


def merge_records(previous: list, new: list) -> list:
    """The section's records after a run of some of its (claim, mutant) pairs: the new verdicts,
    and the previous ones of every pair that was not run again."""
    done = {(r["claim"], r["file"], r["why"]) for r in new}
    kept = [r for r in previous if isinstance(r, dict) and (r.get("claim"), r.get("file"), r.get("why")) not in done]
    return kept + new


def outcome(returncode: int | None) -> str:
    """pytest's exit status -> killed / survived / timeout / broken (None: the run timed out)."""
    if returncode is None:
        return "timeout"
    return {0: "survived", 1: "killed"}.get(returncode, "broken")


@dataclass
class Result:
    mutant: Mutant
    claim: str
    status: str
    seconds: float
    detail: str = ""
    fingerprint: str = ""


def _collect_claim_files(work: Path) -> dict[str, list[str]]:
    """claim id -> the test files whose tests name it, from one collection in the scratch copy."""
    dump = work / ".claim-files.json"
    code = ("import json, sys, pytest\n"
            "from spec.plugin import claim_marks\n"
            "seen = {}\n"
            "class Dump:\n"
            "    @pytest.hookimpl(trylast=True)\n"
            "    def pytest_collection_modifyitems(self, items):\n"
            "        for it in items:\n"
            "            for cid, _ in claim_marks(it) if hasattr(it, 'iter_markers') else ():\n"
            "                seen.setdefault(cid, set()).add(it.nodeid.split('::')[0])\n"
            "rc = pytest.main(['--collect-only', '-q', '-p', 'no:xdist', '-p', 'no:cacheprovider', '-m', ''],"
            " plugins=[Dump()])\n"
            f"json.dump({{k: sorted(v) for k, v in seen.items()}}, open({str(dump)!r}, 'w'))\n"
            "sys.exit(0 if rc in (0, 1) else rc)\n")
    run = subprocess.run([sys.executable, "-c", code], cwd=work, capture_output=True, text=True)
    if run.returncode != 0 or not dump.is_file():
        raise RuntimeError(f"collecting the claims' tests failed (exit {run.returncode}):\n{run.stdout[-3000:]}"
                           f"\n{run.stderr[-3000:]}")
    return json.loads(dump.read_text())


def _run_one(work: Path, m: Mutant, claim: str, files: list[str], timeout: float) -> Result:
    if not files:
        return Result(m, claim, "broken", 0.0, f"no test names {claim}")
    fp = fingerprint(m, claim, files)  # before the run: the checkout may change while it goes on
    cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:xdist", "-p", "no:cacheprovider",
           "--no-header", "-rfE", "--claims-id", claim, "-m", "" if m.slow else "not slow", *files]
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci", PYTHONDONTWRITEBYTECODE="1")
    env.pop("CI", None)
    t0 = time.perf_counter()
    try:
        run = subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
        rc, text = run.returncode, run.stdout + run.stderr
    except subprocess.TimeoutExpired as e:
        rc, text = None, (e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")
    status = outcome(rc)
    detail = ""
    if status == "killed":  # the first failing test, as pytest's short summary names it (-rfE)
        detail = next((ln for ln in text.splitlines() if ln.startswith(("FAILED", "ERROR"))), "")
    elif status == "broken":
        detail = text[-1500:]
    return Result(m, claim, status, time.perf_counter() - t0, detail, fp)


def _worker(mutants: list[Mutant], claim_files: dict[str, list[str]], timeout: float, tag: str) -> list[Result]:
    # one scratch copy per worker: the workers are threads of one process, so the pid alone is shared
    work = Path(tempfile.mkdtemp(prefix=f"mp-claim-mutants-{tag}-"))
    from spec.mutation import copy_checkout
    copy_checkout(work)
    results = []
    try:
        for m in mutants:
            target = work / m.file
            original = target.read_text()
            target.write_text(original.replace(m.old, m.new, 1))
            try:
                for c in m.claims:
                    r = _run_one(work, m, c, claim_files.get(c, []), timeout)
                    print(f"  {m.name:<18} {c:<45} {r.status:<8} {r.seconds:5.1f} s", flush=True)
                    results.append(r)
            finally:
                target.write_text(original)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spec.claim_mutants", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sections", nargs="*", help="registry stems to run (default: every file in spec/mutants)")
    ap.add_argument("--claim", action="append", default=[], metavar="ID", help="only the mutants of this claim (repeatable)")
    ap.add_argument("--out", default=str(ROOT / RECORDS), help=f"folder of the verdicts (default {RECORDS})")
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested side by side, each in its own copy (default 1)")
    ap.add_argument("--stale", action="store_true",
                    help="only the claim runs without a current record (never run, or code or tests changed since)")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds for one claim's tests on one mutant (default 600)")
    args = ap.parse_args(argv)
    if args.jobs < 1:
        ap.error(f"--jobs: expected a positive count, got {args.jobs}")
    wanted = set(args.sections) | {c.split(".", 1)[0] for c in args.claim}
    try:
        mutants = load_mutants(sections=wanted or None)
    except MutantError as e:
        ap.error(str(e))
    known = {p.stem for p in MUTANTS_DIR.glob("*.toml")}
    unknown = set(args.sections) - known
    if unknown:
        ap.error(f"sections without mutants: {sorted(unknown)}; with mutants: {', '.join(sorted(known))}")
    chosen = [m for m in mutants if (not args.sections or m.section in args.sections)
              and (not args.claim or set(m.claims) & set(args.claim))]
    if not chosen:
        ap.error("no mutant matches the sections and claims given")
    if args.claim:
        chosen = [replace(m, claims=tuple(c for c in m.claims if c in args.claim)) for m in chosen]
    tag = "-".join(sorted({m.section for m in chosen}))[:60]
    out = Path(args.out)
    scan = Path(tempfile.mkdtemp(prefix=f"mp-claim-mutants-{tag}-collect-"))
    from spec.mutation import copy_checkout
    copy_checkout(scan)
    try:
        claim_files = _collect_claim_files(scan)
    finally:
        shutil.rmtree(scan, ignore_errors=True)
    if args.stale:
        current = ledger_mutants(claim_files, out, sections={m.section for m in chosen})
        fresh = {(c, e["why"], e["file"]) for c, es in current.items() for e in es if e["status"] != "not run"}
        chosen = [replace(m, claims=tuple(c for c in m.claims if (c, m.why, m.file) not in fresh)) for m in chosen]
        chosen = [m for m in chosen if m.claims]
        if not chosen:
            print("every claim run has a current record")
            return 0
    print(f"{len(chosen)} mutants, {sum(len(m.claims) for m in chosen)} claim runs, {args.jobs} job(s)", flush=True)
    shares = [chosen[i::args.jobs] for i in range(args.jobs)]
    with ThreadPoolExecutor(args.jobs) as pool:
        results = [r for part in pool.map(lambda s: _worker(s, claim_files, args.timeout, tag),
                                          [s for s in shares if s]) for r in part]
    out.mkdir(parents=True, exist_ok=True)
    bad = []
    for section in sorted({r.mutant.section for r in results}):
        rows = [r for r in results if r.mutant.section == section]
        rows.sort(key=lambda r: (r.mutant.index, r.claim))
        # a run of some claims keeps the recorded verdicts of the section's other claims
        path = out / f"claims-{section}.json"
        try:
            previous = json.loads(path.read_text())
        except (OSError, ValueError):
            previous = []
        path.write_text(json.dumps(merge_records(previous, [
            {"mutant": r.mutant.name, "claim": r.claim, "file": r.mutant.file, "why": r.mutant.why,
             "status": r.status, "seconds": round(r.seconds, 1), "detail": r.detail,
             "fingerprint": r.fingerprint} for r in rows]), indent=1))
        caught = sum(r.status in ("killed", "timeout") for r in rows)
        print(f"{section}: {caught} of {len(rows)} claim runs caught the mutant")
        bad += [r for r in rows if r.status in ("survived", "broken")]
    for r in bad:
        print(f"{r.status.upper()}: {r.mutant.name} ({r.claim}): {r.mutant.why}\n{r.detail}".rstrip())
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
