"""The verify command: usage errors exit 2 before any test runs, the pytest command it builds, a
report that is replaced only by a finished run, --claim and --list, and section coverage.

Most tests replace ``subprocess.run`` with a fake pytest that writes a ledger (or crashes), so they
take milliseconds; two slow tests run the real command on one small section."""

from __future__ import annotations

import json
import os
import shlex
import signal
import tomllib
from pathlib import Path

import pytest

from spec import verify
from spec.registry import Claim, VERDICTS

ROOT = Path(__file__).resolve().parent.parent


def no_pytest(*args, **kwargs):
    raise AssertionError("a usage error must be reported before pytest starts")


@pytest.fixture
def fake_default_paths(monkeypatch, tmp_path):
    """Keep the checkout's report/ and the real notes out of the fake runs."""
    monkeypatch.setattr(verify, "DEFAULT_OUT", tmp_path / "default-report")
    monkeypatch.setattr(verify, "DEFAULT_NOTES", tmp_path / "absent.tex")


def previous_report(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True)
    (out / "ledger.json").write_text('{"old": true}')
    (out / "ledger.md").write_text("old")
    (out / "index.html").write_text("<p>old</p>")
    (out / "figures").mkdir()
    (out / "figures" / "old.png").write_bytes(b"png")
    return snapshot(out)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def fake_ledger(failing: bool = False, claim: str = "cnn.output-size") -> dict:
    test = {"nodeid": "properties/test_cnn.py::test_x", "role": "verifies",
            "outcome": "failed" if failing else "passed", "seconds": 0.25}
    return {"generated": "2026-01-01T00:00:00+00:00", "environment": {"device": "cpu"},
            "summary": {"claims": 1, "holds": 1, "false-as-written": 0, "conditional": 0, "not-testable": 0,
                        "failing": int(failing), "notes_lines": 0, "notes_lines_covered": 0},
            "claims": [{"id": claim, "section": "CNN", "kind": "shape", "statement": "floor((n + 2p - k) / s) + 1",
                        "lines": "818-820", "verdict": "holds", "correction": "", "reason": "",
                        "status": "failing" if failing else "confirmed", "tests": [test],
                        "evidence": "exact on 25 draws"}]}


class FakePytest:
    """Stands in for ``subprocess.run``: records the command and writes what a run would write."""

    def __init__(self, rc=0, ledger=True, failing=False, interrupt=False, term=False, claim="cnn.output-size"):
        self.rc, self.ledger, self.failing, self.interrupt, self.claim = rc, ledger, failing, interrupt, claim
        self.term = term
        self.cmd = None

    def __call__(self, cmd, cwd=None, **kw):
        self.cmd = cmd
        self.cwd = cwd
        out = Path(next(a for a in cmd if a.startswith("--ledger=")).split("=", 1)[1])
        self.ledger_dir = out
        (out / "figures").mkdir(exist_ok=True)
        (out / "figures" / "new.png").write_bytes(b"new png")
        if self.ledger:
            (out / "ledger.json").write_text(json.dumps(fake_ledger(self.failing, self.claim)))
            (out / "ledger.md").write_text("new")
            (out / "index.html").write_text("<p>new</p>")
        if self.interrupt:
            raise KeyboardInterrupt
        if self.term:
            os.kill(os.getpid(), signal.SIGTERM)

        class Done:
            returncode = self.rc
        return Done()


# --------------------------------------------------------------------------- usage errors


def _bad_utf8(tmp_path):
    p = tmp_path / "latin1.tex"
    p.write_bytes("\\section{Caf\xe9}".encode("latin-1"))
    return str(p)


def _a_file(tmp_path):
    p = tmp_path / "a-file"
    p.write_text("x")
    return str(p)


def _foreign(tmp_path):
    d = tmp_path / "mine"
    (d / "figures").mkdir(parents=True)
    (d / "ledger.json").write_text("{}")
    (d / "thesis.tex").write_text("precious")
    (d / "figures" / "plot.svg").write_text("precious")
    return str(d)


@pytest.mark.parametrize("argv, message", [
    (["--section", "no-such-section"], "--section: unknown section(s) no-such-section; the sections are: activations, appendix,"),
    (["--section", "cnn", "--section", "flow"], "unknown section(s) flow;"),
    (["--claim", "cnn.output-sise"], "unknown claim id 'cnn.output-sise'; did you mean cnn.output-size?"),
    (["--claim", "nosuch.thing"], "ids are <section>.<name>; the sections are: activations"),
    (["--claim", "cnn.output-size", "--section", "cnn"], "give one of them"),
    (["--notes", "{tmp}/missing.tex"], "--notes: '{tmp}/missing.tex' is not a file"),
    (["--notes", _bad_utf8], "cannot be read as UTF-8 text"),
    (["--out", _a_file], "exists and is not a folder"),
    (["--out", _foreign], "holds files verify did not write (figures/, thesis.tex)"),
    (["--out", str(ROOT)], "holds the checkout"),
    (["--out", str(ROOT / "spec")], "holds files verify did not write"),
    (["--device", "tpu"], "--device: expected cpu, cuda, cuda:N or all, got 'tpu'"),
    (["-n", "many"], "-n: expected auto, logical or a number of workers, got 'many'"),
])
def test_usage_errors_exit_2_before_any_test_runs(monkeypatch, tmp_path, capsys, argv, message):
    monkeypatch.setattr(verify.subprocess, "run", no_pytest)
    argv = [a(tmp_path) if callable(a) else a.format(tmp=tmp_path) for a in argv]
    before = snapshot(tmp_path)
    assert verify.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("verify: error: ") and message.format(tmp=tmp_path) in err
    assert snapshot(tmp_path) == before  # nothing written, not even into a refused --out


def test_a_stray_argument_is_a_usage_error(monkeypatch, capsys):
    monkeypatch.setattr(verify.subprocess, "run", no_pytest)
    with pytest.raises(SystemExit) as e:
        verify.main(["cnn"])
    assert e.value.code == 2 and "unrecognized arguments: cnn" in capsys.readouterr().err


def test_a_previous_report_is_accepted_as_out(tmp_path):
    out = tmp_path / "report"
    previous_report(out)
    (out / "benchmarks.json").write_text("{}")
    (out / "mutation").mkdir()
    (out / "mutation" / "cnn.txt").write_text("killed 9 of 10")
    (out / "mutation" / "claims-cnn.json").write_text("[]")  # python -m spec.claim_mutants writes these
    (out / ".verify-partial-x1y2").mkdir()  # left by a run that was killed outright
    verify.check_out(out)  # raises UsageError otherwise
    verify.check_out(tmp_path / "new" / "folder")
    (out / "figures" / "notes.txt").write_text("not a figure")
    with pytest.raises(verify.UsageError, match="figures/"):
        verify.check_out(out)


def test_help_says_how_checkout_and_notes_are_chosen(capsys):
    with pytest.raises(SystemExit) as e:
        verify.main(["--help"])
    text = capsys.readouterr().out
    assert e.value.code == 0 and text.startswith("usage: verify ")
    assert "`" not in text  # plain text, no reStructuredText markup
    assert "Which checkout: the one this command was installed from" in text
    assert "Which notes: --notes PATH when given" in text
    assert f"checkout {verify.ROOT}" in text and f"default notes {verify.DEFAULT_NOTES}" in text
    assert "Exit status: 0" in text and "2 a usage error" in text


def test_bench_gate_help_names_the_command(capsys):
    from benchmarks import gate

    with pytest.raises(SystemExit):
        gate.main(["--help"])
    text = capsys.readouterr().out
    assert text.startswith("usage: bench-gate ") and "`" not in text


def _fake_session(group, kernel_s, reference_s):
    bench = lambda name, t, role: {"fullname": f"b.py::{name}", "name": name, "group": group,  # noqa: E731
                                   "stats": {"min": t}, "extra_info": {"role": role}}
    return {"benchmarks": [bench("test_ref", reference_s, "reference"), bench("test_kernel", kernel_s, "kernel")]}


@pytest.mark.parametrize("keyword", [None, "lstm"])
def test_bench_gate_update_with_k_keeps_the_other_groups(monkeypatch, tmp_path, capsys, keyword):
    # `bench-gate -k EXPR --update-baseline` times a subset; the groups it did not time must keep
    # their baseline (a full run rewrites the file, so that a removed benchmark leaves it)
    from benchmarks import gate

    base = tmp_path / "baseline.json"
    base.write_text(json.dumps({"attention.x::test_kernel": 1.5, "lstm.y::test_kernel": 3.0}))
    monkeypatch.setattr(gate, "BASELINE", base)
    monkeypatch.setattr(gate, "time_sessions", lambda paths, args, n: [_fake_session("lstm.y", 2.0, 1.0)])
    argv = ["--update-baseline", "--out", str(tmp_path / "b.json")] + (["-k", keyword] if keyword else [])
    assert gate.main(argv) == 0
    expected = {"lstm.y::test_kernel": 2.0} | ({"attention.x::test_kernel": 1.5} if keyword else {})
    assert json.loads(base.read_text()) == expected


def test_list_counts_each_sections_claims_by_verdict(monkeypatch, capsys):
    monkeypatch.setattr(verify.subprocess, "run", no_pytest)
    assert verify.main(["--list"]) == 0
    rows = {ln.split()[0]: [int(x) for x in ln.split()[1:]] for ln in capsys.readouterr().out.splitlines()[2:]}
    expected, total = {}, [0] * (1 + len(VERDICTS))
    for path in sorted((ROOT / "spec" / "claims").glob("*.toml")):  # read independently of the registry loader
        verdicts = [c["verdict"] for c in tomllib.loads(path.read_text())["claim"]]
        expected[path.stem] = [len(verdicts)] + [verdicts.count(v) for v in VERDICTS]
        total = [a + b for a, b in zip(total, expected[path.stem])]
    expected["all"] = total
    assert rows == expected


# --------------------------------------------------------------------------- the run


def test_the_pytest_command(monkeypatch, tmp_path, capsys, fake_default_paths):
    fake = FakePytest()
    monkeypatch.setattr(verify.subprocess, "run", fake)
    out = tmp_path / "elsewhere" / "out"
    assert verify.main(["--section", "cnn", "--fast", "-n", "0", "--out", str(out), "--", "-x", "-k", "conv"]) == 0
    cmd = fake.cmd
    assert "" not in cmd and fake.cwd == verify.ROOT
    assert f"--rootdir={verify.ROOT}" in cmd and f"--config-file={verify.ROOT / 'pyproject.toml'}" in cmd
    assert cmd[cmd.index("-m", 3) + 1] == "not slow" and "--claims-section=cnn" in cmd
    assert cmd[-3:] == ["-x", "-k", "conv"] and ["-p", "no:xdist"] == cmd[cmd.index("no:xdist") - 1:cmd.index("no:xdist") + 1]
    assert "--disable-warnings" in cmd
    # The ledger is written aside, in a temporary folder inside --out, and that folder is gone after.
    assert fake.ledger_dir.parent == out and fake.ledger_dir.name.startswith(".verify-partial-")
    assert not fake.ledger_dir.exists()
    printed = capsys.readouterr().out
    assert "+ " + shlex.join(cmd) in printed and "-m ''" not in printed
    assert f"verify: checkout {verify.ROOT}" in printed and "verify: notes not found at" in printed

    assert verify.main(["--out", str(out)]) == 0
    cmd = fake.cmd
    assert cmd[cmd.index("-m", 3) + 1] == "slow or not slow" and cmd[cmd.index("-n") + 1] == "auto"
    assert not any(a.startswith("--claims-") for a in cmd)


def test_a_finished_run_replaces_the_report(monkeypatch, tmp_path, capsys, fake_default_paths):
    out = tmp_path / "report"
    previous_report(out)
    (out / "benchmarks.json").write_text('{"ratios": []}')
    monkeypatch.setattr(verify.subprocess, "run", FakePytest())
    assert verify.main(["--out", str(out)]) == 0
    assert json.loads((out / "ledger.json").read_text()) == fake_ledger()
    assert (out / "index.html").read_text() == "<p>new</p>"
    assert sorted(p.name for p in (out / "figures").iterdir()) == ["new.png"]
    assert (out / "benchmarks.json").read_text() == '{"ratios": []}'  # the gate's table is kept
    written = ["benchmarks.json", "figures", "index.html", "ledger.json", "ledger.md"]
    assert sorted(p.name for p in out.iterdir()) == sorted(written + [".verify-files"])  # no temporary folder left
    assert (out / ".verify-files").read_text().split() == written
    # The next run takes the folder as a previous report, even with a file it wrote that verify
    # does not know by name; a file it did not write is refused.
    (out / "notes.html").write_text("from the run")
    (out / ".verify-files").write_text("\n".join(written + ["notes.html"]))
    verify.check_out(out)
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(verify.UsageError, match=r"\(thesis.tex\)"):
        verify.check_out(out)
    assert "Reports: " + str(out / "ledger.json") in capsys.readouterr().out


def test_failing_tests_still_write_the_ledger_and_exit_1(monkeypatch, tmp_path, fake_default_paths):
    out = tmp_path / "report"
    previous_report(out)
    monkeypatch.setattr(verify.subprocess, "run", FakePytest(rc=1, failing=True))
    assert verify.main(["--out", str(out)]) == 1
    assert json.loads((out / "ledger.json").read_text())["summary"]["failing"] == 1
    # A test that failed without failing a claim (say the claims-meta check) also exits 1.
    monkeypatch.setattr(verify.subprocess, "run", FakePytest(rc=1))
    assert verify.main(["--out", str(out)]) == 1


class SkippedPytest(FakePytest):
    """A run whose only backing test was skipped (say, a reference library missing)."""

    def __call__(self, cmd, cwd=None, **kw):
        done = super().__call__(cmd, cwd, **kw)
        ledger = json.loads((self.ledger_dir / "ledger.json").read_text())
        ledger["claims"][0].update(status="untested", untested_reason="skipped: no module named gymnasium")
        ledger["claims"][0]["tests"][0]["outcome"] = "skipped"
        (self.ledger_dir / "ledger.json").write_text(json.dumps(ledger))
        return done


def test_an_untested_claim_fails_a_full_run_but_not_a_fast_one(monkeypatch, tmp_path, fake_default_paths, capsys):
    # DESIGN.md: exit 0 only when every claim is confirmed; --fast leaves the slow checks' claims
    # untested by design, so there a skip is reported, not failed.
    monkeypatch.setattr(verify.subprocess, "run", SkippedPytest())
    assert verify.main(["--out", str(tmp_path / "full")]) == 1
    assert "left untested" in capsys.readouterr().out
    assert verify.main(["--out", str(tmp_path / "fast"), "--fast"]) == 0


@pytest.mark.parametrize("fake, code", [
    (FakePytest(rc=2, ledger=True), 1),      # interrupted, or errors during collection
    (FakePytest(rc=3, ledger=False), 1),     # internal error, no ledger
    (FakePytest(rc=0, ledger=False), 1),     # a run that ended without its ledger
    (FakePytest(rc=4, ledger=False), 2),     # pytest refused an argument after --
    (FakePytest(interrupt=True), 130),       # Ctrl-C
    (FakePytest(term=True), 130),            # SIGTERM, a CI job's timeout
])
def test_a_broken_run_leaves_the_previous_report_untouched(monkeypatch, tmp_path, fake, code, fake_default_paths):
    out = tmp_path / "report"
    before = previous_report(out)
    monkeypatch.setattr(verify.subprocess, "run", fake)
    assert verify.main(["--out", str(out)]) == code
    assert snapshot(out) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report"]
    assert not [p for p in out.iterdir() if p.name.startswith(".verify-partial-")]


def test_claim_prints_the_claim_and_keeps_no_report(monkeypatch, tmp_path, capsys, fake_default_paths):
    fake = FakePytest()
    monkeypatch.setattr(verify.subprocess, "run", fake)
    assert verify.main(["--claim", "cnn.output-size"]) == 0
    assert "--claims-id=cnn.output-size" in fake.cmd and "no:xdist" in fake.cmd  # a claim's few tests run serially
    text = capsys.readouterr().out
    assert "cnn.output-size: holds, confirmed" in text
    assert "statement: floor((n + 2p - k) / s) + 1" in text and "evidence: exact on 25 draws" in text
    assert "passed   verifies  properties/test_cnn.py::test_x (0.25 s)" in text
    assert not verify.DEFAULT_OUT.exists() and not fake.ledger_dir.exists()
    monkeypatch.setattr(verify.subprocess, "run", FakePytest(rc=1, failing=True))
    assert verify.main(["--claim", "cnn.output-size"]) == 1
    assert "cnn.output-size: holds, failing" in capsys.readouterr().out


# --------------------------------------------------------------------------- a section's coverage

NOTES = r"""\documentclass{article}
\begin{document}
\section{One}
intro of one
\subsection{A}
line a1
line a2
\subsection{B}
line b1
\section{Two}
line t1
% a comment only
line t2
\end{document}
"""


def _claim(cid, lines, verdict="holds"):
    return Claim(id=cid, section="S", statement="s", kind="identity", verdict=verdict, lines=lines)


def test_a_section_run_counts_the_notes_blocks_its_claims_stand_in(tmp_path):
    # Lines: 4 intro, 6-7 subsection A, 9 subsection B, 11 and 13 section Two (12 is a comment).
    claims = {c.id: c for c in [_claim("a.x", "6"), _claim("a.y", "11"), _claim("b.z", "9, 13")]}
    assert verify.section_scope(NOTES, claims, {"a"}) == {6, 7, 11, 13}   # blocks A and Two
    assert verify.section_scope(NOTES, claims, {"b"}) == {9, 11, 13}      # blocks B and Two
    notes = tmp_path / "notes.tex"
    notes.write_text(NOTES)
    ledger = {"summary": {"notes_lines": 8, "notes_lines_covered": 3}, "coverage": {}}
    verify.restrict_coverage(ledger, notes, claims, {"a"})
    # 6, 11 by a's claims and 13 by b's: a line counts as covered whoever's claim covers it.
    assert (ledger["summary"]["notes_lines"], ledger["summary"]["notes_lines_covered"]) == (4, 3)
    assert ledger["coverage"]["scope"] == {"sections": ["a"], "lines": "6-7, 11, 13"}
    assert {s["section"]: s["uncovered"] for s in ledger["coverage"]["sections"]} == {"One": [7], "Two": []}


# --------------------------------------------------------------------------- real runs (slow)


@pytest.mark.slow
def test_real_section_run_outside_the_checkout(tmp_path, capfd):
    out = tmp_path / "out"
    ledger_file = ROOT / "report" / "ledger.json"
    before = ledger_file.stat().st_mtime_ns if ledger_file.exists() else None
    rc = verify.main(["--section", "activations", "--fast", "-n", "0", "--out", str(out),
                      "--", "properties/test_activations.py"])
    text = capfd.readouterr().out
    assert rc == 0, text[-3000:]
    ledger = json.loads((out / "ledger.json").read_text())
    assert {c["id"].split(".")[0] for c in ledger["claims"]} == {"activations"}
    assert all(c["status"] in ("confirmed", "untested") for c in ledger["claims"])
    assert (out / "ledger.md").is_file() and (out / "index.html").is_file()
    if verify.DEFAULT_NOTES.is_file():
        from spec.registry import load_registry

        claims = load_registry(ROOT / "spec" / "claims")
        scope = verify.section_scope(verify.DEFAULT_NOTES.read_text(encoding="utf-8"), claims, {"activations"})
        assert ledger["summary"]["notes_lines"] == len(scope) and 0 < len(scope) < 100
    assert "warnings summary" not in text and f"verify: checkout {ROOT}" in text
    assert (ledger_file.stat().st_mtime_ns if ledger_file.exists() else None) == before


@pytest.mark.slow
def test_real_claim_run(tmp_path, capfd):
    rc = verify.main(["--claim", "activations.sigmoid", "--", "properties/test_activations.py"])
    text = capfd.readouterr().out
    assert rc == 0, text[-3000:]
    assert "activations.sigmoid: holds, confirmed" in text
    assert "passed   verifies  properties/test_activations.py::" in text
    assert "deselected" in text  # the file's other tests did not run
