"""pytest plugin: ties tests to claims and writes the ledger.

* ``@pytest.mark.claim("cnn.output-size", role="verifies")`` declares what a test checks.
* At collection, a synthetic item ``claims-meta`` is added; it fails the run when a marker names an
  unknown claim, when a test's role disagrees with its claim's verdict, or (on a full collection)
  when a claim lacks the tests its verdict needs.
* With ``--ledger DIR`` the controlling process writes ``DIR/ledger.json``, ``ledger.md`` and
  ``index.html`` after the run (under xdist, workers ship markers and outcomes in
  ``user_properties``, which xdist serialises for us).
"""

from __future__ import annotations

import datetime as _dt
import json
import platform
from pathlib import Path

import pytest

from spec.registry import ALLOWED_ROLES, REQUIRED_ROLES, ROLES, RegistryError, load_registry

META_NAME = "claims-meta"
DEFAULT_NOTES = Path("..") / "shared" / "notes" / "machine-perception-summary.tex"


def pytest_addoption(parser):
    parser.addini("claims_registry", "directory of the claim registry TOML files", default="spec/claims")
    group = parser.getgroup("claims", "claims ledger")
    group.addoption("--ledger", metavar="DIR", default=None, help="write ledger.json/.md and index.html into DIR")
    group.addoption("--claims-section", action="append", default=[], metavar="NAME",
                    help="only run tests of claims in this registry file (repeatable), e.g. cnn")
    group.addoption("--notes", metavar="PATH", default=None,
                    help="the notes' .tex file for line coverage (default ../shared/notes/machine-perception-summary.tex)")


def claim_marks(item) -> list[tuple[str, str]]:
    """[(claim id, role)] from every ``claim`` marker on the item."""
    out = []
    for m in item.iter_markers("claim"):
        role = m.kwargs.get("role", "verifies")
        extra = set(m.kwargs) - {"role"}
        if extra:
            raise pytest.UsageError(f"{item.nodeid}: claim marker takes only role=, got {sorted(extra)}")
        if not m.args:
            raise pytest.UsageError(f"{item.nodeid}: claim marker names no claim id")
        out.extend((cid, role) for cid in m.args)
    return out


class ClaimsMeta(pytest.Item):
    """Fails when markers and registry disagree (see module docstring)."""

    def __init__(self, *, problems: list[str], **kw):
        super().__init__(**kw)
        self.problems = problems

    def runtest(self):
        if self.problems:
            raise AssertionError("claims registry and test markers disagree:\n  " + "\n  ".join(self.problems))

    def reportinfo(self):
        return self.path, 0, f"claims registry meta-check ({len(self.problems)} problems)"

    def repr_failure(self, excinfo):
        return str(excinfo.value)


def _registry_dir(config) -> Path:
    return Path(config.rootpath) / config.getini("claims_registry")


def pytest_configure(config):
    try:
        config._claims = load_registry(_registry_dir(config))
    except RegistryError as e:
        raise pytest.UsageError(str(e)) from None
    config._claim_results = {}
    config.pluginmanager.register(_Recorder(config), f"claims-recorder-{id(config)}")


def _full_collection(config) -> bool:
    return (config.args_source == pytest.Config.ArgsSource.TESTPATHS
            or all(Path(a).resolve() == Path(config.rootpath).resolve() for a in config.args)) \
        and not config.option.keyword


@pytest.hookimpl(tryfirst=True)  # before -m deselects slow tests: they back claims too
def pytest_collection_modifyitems(session, config, items):
    claims = config._claims
    sections = set(config.getoption("claims_section"))
    unknown_sections = sections - {c.chapter for c in claims.values()}
    if unknown_sections:
        raise pytest.UsageError(f"--claims-section: unknown section(s) {sorted(unknown_sections)}")
    problems: list[str] = []
    roles_seen: dict[str, set[str]] = {}
    keep = []
    for item in items:
        marks = claim_marks(item)
        for cid, role in marks:
            if role not in ROLES:
                problems.append(f"{item.nodeid}: role {role!r} is not one of {ROLES}")
            elif cid not in claims:
                problems.append(f"{item.nodeid}: marker names unknown claim {cid!r}")
            elif role not in ALLOWED_ROLES[claims[cid].verdict]:
                problems.append(f"{item.nodeid}: role {role!r} disagrees with the verdict "
                                f"{claims[cid].verdict!r} of {cid!r}")
            else:
                roles_seen.setdefault(cid, set()).add(role)
        item.user_properties.append(("claims", [[c, r] for c, r in marks]))
        # A section's run keeps the tests of its claims and every test in its own files
        # (properties/test_<stem>.py, ...), so its bad-input tests run too.
        if not sections or any(c.split(".", 1)[0] in sections for c, _ in marks) \
                or Path(str(item.fspath)).stem.removeprefix("test_") in sections:
            keep.append(item)
    # A full collection, or an explicit --claims-section, must back every claim it covers.
    if sections or _full_collection(config):
        for cid, claim in claims.items():
            if sections and claim.chapter not in sections:
                continue
            missing = [r for r in REQUIRED_ROLES[claim.verdict] if r not in roles_seen.get(cid, set())]
            if missing:
                problems.append(f"{cid} ({claim.file}): verdict {claim.verdict!r} has no {'/'.join(missing)} test")
    if sections:
        deselected = [i for i in items if i not in keep]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = keep
    meta = ClaimsMeta.from_parent(session, name=META_NAME, problems=problems)
    meta.path = _registry_dir(config)
    items.insert(0, meta)


class _Recorder:
    """Collects each test's outcome, duration and properties; one per config (pytester runs nest)."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        # Runs in the controller (and in a plain run); under xdist the worker's reports arrive here.
        if hasattr(self.config, "workerinput"):
            return
        res = self.config._claim_results.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0, "props": {}})
        res["seconds"] += getattr(report, "duration", 0.0)
        for k, v in report.user_properties:
            if k in ("evidence", "figure"):
                res["props"].setdefault(k, [])
                if v not in res["props"][k]:
                    res["props"][k].append(v)
            else:
                res["props"][k] = v
        if report.failed:
            res["outcome"] = "failed" if report.when == "call" else "error"
        elif report.skipped and res["outcome"] == "passed":
            res["outcome"] = "skipped"


def _environment() -> dict:
    import torch

    if torch.cuda.is_available():
        device = f"cuda:0 ({torch.cuda.get_device_name(0)})"
    else:
        device = "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "dtype": "float64 exactness on CPU; float32 on every device", "platform": platform.platform()}


def build_ledger(claims, results, notes_path: Path | None) -> dict:
    """The ledger dict of DESIGN.md from the registry and the per-test results."""
    from spec.coverage import notes_coverage

    by_claim: dict[str, list[dict]] = {cid: [] for cid in claims}
    evidence: dict[str, list[str]] = {cid: [] for cid in claims}
    figures: dict[str, list[str]] = {cid: [] for cid in claims}
    for nodeid, res in sorted(results.items()):
        for cid, role in res["props"].get("claims", []):
            if cid not in by_claim:
                continue
            by_claim[cid].append({"nodeid": nodeid, "role": role, "outcome": res["outcome"],
                                  "seconds": round(res["seconds"], 4)})
            evidence[cid].extend(e for e in res["props"].get("evidence", []) if e not in evidence[cid])
            figures[cid].extend(f for f in res["props"].get("figure", []) if f not in figures[cid])
    out_claims = []
    counts = {"claims": len(claims), "holds": 0, "false-as-written": 0, "conditional": 0,
              "not-testable": 0, "failing": 0}
    for cid, c in claims.items():
        tests = [t for t in by_claim[cid] if t["outcome"] != "skipped"]
        if any(t["outcome"] in ("failed", "error") for t in tests):
            status = "failing"
        elif tests and all(any(t["role"] == r and t["outcome"] == "passed" for t in tests)
                           for r in REQUIRED_ROLES[c.verdict]) and REQUIRED_ROLES[c.verdict]:
            status = "confirmed"
        else:
            status = "untested"
        counts[c.verdict] += 1
        counts["failing"] += status == "failing"
        entry = {"id": cid, "section": c.section, "kind": c.kind, "statement": c.statement,
                 "lines": c.lines, "verdict": c.verdict, "correction": c.correction, "reason": c.reason,
                 "status": status, "tests": by_claim[cid], "evidence": "; ".join(evidence[cid])}
        if figures[cid]:
            entry["figures"] = figures[cid]
        out_claims.append(entry)
    cov = notes_coverage(notes_path, claims) if notes_path else None
    counts["notes_lines"] = cov["notes_lines"] if cov else 0
    counts["notes_lines_covered"] = cov["notes_lines_covered"] if cov else 0
    ledger = {"generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "environment": _environment(), "summary": counts, "claims": out_claims}
    if cov:
        ledger["coverage"] = cov
    return ledger


def resolve_notes(config) -> Path | None:
    given = config.getoption("notes")
    path = Path(given) if given else Path(config.rootpath) / DEFAULT_NOTES
    return path.resolve() if path.is_file() else None


def pytest_sessionfinish(session, exitstatus):
    config = session.config
    out = config.getoption("ledger")
    if not out or hasattr(config, "workerinput"):
        return
    from spec.report import write_reports

    notes = resolve_notes(config)
    claims = config._claims
    sections = set(config.getoption("claims_section"))
    if sections:
        claims = {k: v for k, v in claims.items() if v.chapter in sections}
    ledger = build_ledger(claims, config._claim_results, notes)
    ledger["notes_file"] = str(notes) if notes else None
    write_reports(ledger, Path(out), notes)
    config._ledger = ledger


def pytest_terminal_summary(terminalreporter, config):
    ledger = getattr(config, "_ledger", None)
    if ledger is None:
        return
    s = ledger["summary"]
    terminalreporter.write_sep("=", "claims ledger")
    terminalreporter.write_line(
        f"{s['claims']} claims: {s['holds']} hold, {s['false-as-written']} false as written, "
        f"{s['conditional']} conditional, {s['not-testable']} not testable; {s['failing']} failing; "
        f"notes lines covered {s['notes_lines_covered']}/{s['notes_lines']}")
    if ledger.get("notes_file") is None:
        terminalreporter.write_line("notes file not found: line coverage not computed (use --notes PATH)")
    terminalreporter.write_line(f"written to {config.getoption('ledger')}/ledger.json, ledger.md, index.html")
