"""The ledger dict of DESIGN.md, from the registry, the per-test results and the notes file.

Kept apart from the pytest plugin so that the report can be built (and tested) from a registry and
made-up results without a pytest run.
"""

from __future__ import annotations

import datetime as _dt
import platform

from spec.coverage import (HASHES, Notes, NotesError, claim_source, content_lines, load_hashes, notes_check,
                           notes_coverage, read_notes)
from spec.registry import FLAGGED, REQUIRED_ROLES, SEVERITIES

# the statuses of a claim mutant that mean its tests caught it (spec/claim_mutants.py)
CAUGHT = ("killed", "timeout")


def environment() -> dict:
    import torch

    if torch.cuda.is_available():
        device = f"cuda:0 ({torch.cuda.get_device_name(0)})"
    else:
        device = "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__, "device": device,
            "dtype": "float64 exactness on CPU; float32 on every device", "platform": platform.platform()}


def claim_status(verdict: str, tests: list[dict]) -> str:
    """``confirmed`` when every backing test ran and passed and each role the verdict needs is there,
    ``failing`` when any failed, ``untested`` otherwise (a skipped backing test included)."""
    if any(t["outcome"] in ("failed", "error") for t in tests):
        return "failing"
    need = REQUIRED_ROLES[verdict]
    if not need or not tests or any(t["outcome"] != "passed" for t in tests):
        return "untested"
    roles = {t["role"] for t in tests}
    return "confirmed" if all(r in roles for r in need) else "untested"


def _open_notes(notes) -> tuple[Notes | None, str | None]:
    if notes is None or isinstance(notes, Notes):
        return notes, None
    try:
        return read_notes(notes), None
    except NotesError as e:
        return None, str(e)


def _ranges(nums: list[int]) -> str:
    """[3, 4, 5, 9] -> "3-5, 9"."""
    runs: list[list[int]] = []
    for n in nums:
        if runs and n == runs[-1][1] + 1:
            runs[-1][1] = n
        else:
            runs.append([n, n])
    return ", ".join(f"{a}-{b}" if b != a else str(a) for a, b in runs)


def build_ledger(claims: dict, results: dict, notes=None, *, hashes: dict | None = None,
                 environment_info: dict | None = None, scoped: bool = False) -> dict:
    """The ledger of DESIGN.md.

    claims: {id: Claim}; results: {nodeid: {"outcome", "seconds", "props": {"claims": [[id, role]],
    "evidence": [...], "figure": [path, ...], "caption": [[path, text], ...]}, "reason": skip reason}}; notes: a path, a
    :class:`Notes` or None; hashes: the recorded line hashes (default spec/notes-lines.json);
    scoped: ``claims`` are some sections' only (``--claims-section``), so coverage counts the lines of
    the notes' sections they stand in (``coverage["scope"]``), not the whole file.
    """
    notes, notes_error = _open_notes(notes)
    by_claim: dict[str, list[dict]] = {cid: [] for cid in claims}
    evidence: dict[str, list[str]] = {cid: [] for cid in claims}
    figures: dict[str, list[dict]] = {cid: [] for cid in claims}
    for nodeid, res in sorted(results.items()):
        props = res.get("props", {})
        # save_figure(..., caption=, claims=) records ("caption", [path, text]) and
        # ("figure_claims", [path, [id, ...]]) beside ("figure", path).
        captions = {c[0]: str(c[1]) for c in props.get("caption", []) if isinstance(c, (list, tuple)) and len(c) == 2}
        for path, ids in (e for e in props.get("figure_claims", []) if isinstance(e, (list, tuple)) and len(e) == 2):
            for cid in (i for i in ids if i in figures):
                if all(g["path"] != path for g in figures[cid]):
                    figures[cid].append({"path": path, "caption": captions.get(path, "")})
        for cid, role in props.get("claims", []):
            if cid not in by_claim:
                continue
            t = {"nodeid": nodeid, "role": role, "outcome": res["outcome"], "seconds": round(res["seconds"], 4)}
            if res.get("reason"):
                t["reason"] = res["reason"]
            by_claim[cid].append(t)
            evidence[cid].extend(e for e in props.get("evidence", []) if e not in evidence[cid])
            for f in props.get("figure", []):
                if all(g["path"] != f for g in figures[cid]):
                    figures[cid].append({"path": f, "caption": captions.get(f, "")})
    # The hand-made mutants of each claim (spec/mutants/) and the last verdict of its tests on them.
    from spec.claim_mutants import MutantError, ledger_mutants
    files = {cid: sorted({t["nodeid"].split("::")[0] for t in ts}) for cid, ts in by_claim.items()}
    mutants_error = None
    try:
        mutants = ledger_mutants(files, sections={c.chapter for c in claims.values()})
    except (MutantError, OSError) as e:
        mutants, mutants_error = {}, str(e)
    check = notes_check(notes, claims, load_hashes(HASHES) if hashes is None else hashes) if notes else {}
    counts = {"claims": len(claims), "holds": 0, "false-as-written": 0, "conditional": 0,
              "not-testable": 0, "failing": 0, **{s: 0 for s in SEVERITIES}, "mutants_caught": 0}
    out_claims = []
    for cid, c in claims.items():
        tests = by_claim[cid]
        status = claim_status(c.verdict, tests)
        counts[c.verdict] += 1
        counts["failing"] += status == "failing"
        severity = getattr(c, "severity", "") or ""
        if c.verdict in FLAGGED and severity in SEVERITIES:
            counts[severity] += 1
        entry = {"id": cid, "section": c.section, "kind": c.kind, "statement": c.statement,
                 "lines": c.lines, "verdict": c.verdict}
        if c.verdict in FLAGGED:
            entry["severity"] = severity or None
        entry.update({"correction": c.correction, "reason": c.reason})
        if notes:
            entry["notes_source"] = claim_source(notes.lines, c.line_numbers())
            entry["notes_changed"] = check[cid] == "changed"
            if check[cid] == "unrecorded":
                entry["notes_unrecorded"] = True
        entry.update({"status": status, "tests": tests, "evidence": "; ".join(evidence[cid])})
        skipped = [t for t in tests if t["outcome"] == "skipped"]
        if status == "untested" and skipped:
            entry["untested_reason"] = "; ".join(dict.fromkeys(t.get("reason") or "skipped" for t in skipped))
        if figures[cid]:
            entry["figures"] = figures[cid]
        if cid in mutants:
            entry["mutants"] = mutants[cid]
            counts["mutants_caught"] += any(m["status"] in CAUGHT for m in mutants[cid])
        out_claims.append(entry)
    cov = None
    if notes:
        cov = notes_coverage(notes, claims)
        if scoped:
            content = content_lines(notes.text)
            secs = {content[n][0] for c in claims.values() for n in c.line_numbers() if n in content}
            cov["sections"] = [sec for sec in cov["sections"] if sec["section"] in secs]
            cov["notes_lines"] = sum(sec["lines"] for sec in cov["sections"])
            cov["notes_lines_covered"] = sum(sec["covered"] for sec in cov["sections"])
            lines = sorted(n for n, (sec, _) in content.items() if sec in secs)
            # The same shape as verify's restrict_coverage: the registry sections and the notes' lines.
            cov["scope"] = {"sections": sorted({c.chapter for c in claims.values()}), "lines": _ranges(lines),
                            "notes_sections": [sec["section"] for sec in cov["sections"]]}
    counts["notes_lines"] = cov["notes_lines"] if cov else 0
    counts["notes_lines_covered"] = cov["notes_lines_covered"] if cov else 0
    ledger = {"generated": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
              "environment": environment_info or environment(), "summary": counts, "claims": out_claims,
              "notes_file": str(notes.path) if notes else None}
    if notes:
        ledger["notes_sha256"] = notes.sha256
        ledger["notes_warnings"] = list(notes.warnings)
        ledger["notes_changed"] = [cid for cid in claims if check.get(cid) == "changed"]
        ledger["notes_unrecorded"] = [cid for cid in claims if check.get(cid) == "unrecorded"]
    if notes_error:
        ledger["notes_error"] = notes_error
    if mutants_error:
        ledger["mutants_error"] = mutants_error
    if cov:
        ledger["coverage"] = cov
    return ledger
