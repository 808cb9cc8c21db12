"""The claim mutants of spec/mutants/: well formed, and one for every claim that tests back.

Running them (each one patches the checkout and runs its claim's tests) takes minutes per section:
``python -m spec.claim_mutants``. Here: every entry applies to the file as it is now, and every
testable claim of every section names at least one mutant, so that a confirmed claim says which
wrong implementation its tests were shown to catch.
"""

import textwrap

import pytest

from spec.claim_mutants import MUTANTS_DIR, MutantError, load_mutants, outcome
from spec.registry import load_registry

CLAIMS = load_registry("spec/claims")
TESTABLE = {cid for cid, c in CLAIMS.items() if c.verdict != "not-testable"}
SECTIONS = sorted({c.chapter for cid, c in CLAIMS.items() if cid in TESTABLE})


def test_every_mutant_applies_and_names_testable_claims():
    mutants = load_mutants()
    assert mutants
    for m in mutants:
        for c in m.claims:
            assert c in TESTABLE, f"{m.name}: {c} is not a testable claim of the registry"


@pytest.mark.parametrize("section", SECTIONS)
def test_every_testable_claim_has_a_mutant(section):
    named = {c for m in load_mutants(sections={section}) for c in m.claims}
    missing = sorted(c for c in TESTABLE if c.split(".", 1)[0] == section and c not in named)
    assert not missing, f"spec/mutants/{section}.toml names no mutant for: {', '.join(missing)}"


def _write(tmp_path, body, target="x = 1 + 2\n"):
    (tmp_path / "impl").mkdir(exist_ok=True)
    (tmp_path / "impl" / "m.py").write_text(target)
    d = tmp_path / "mutants"
    d.mkdir(exist_ok=True)
    (d / "cnn.toml").write_text(textwrap.dedent(body))
    return d


@pytest.mark.parametrize("body, message", [
    ('[[mutant]]\nclaim = "cnn.a"\nfile = "impl/m.py"\nold = "1 + 2"\nnew = "1 + 2"\nwhy = "w"\n', "new equals old"),
    ('[[mutant]]\nclaim = "cnn.a"\nfile = "impl/m.py"\nold = "1 - 2"\nnew = "1"\nwhy = "w"\n', "occurs 0 times"),
    ('[[mutant]]\nclaim = "rl.a"\nfile = "impl/m.py"\nold = "1 + 2"\nnew = "1"\nwhy = "w"\n', "ids of cnn.toml"),
    ('[[mutant]]\nclaim = "cnn.a"\nfile = "impl/none.py"\nold = "1 + 2"\nnew = "1"\nwhy = "w"\n', "is not a file"),
    ('[[mutant]]\nclaim = "cnn.a"\nclaims = ["cnn.b"]\nfile = "impl/m.py"\nold = "1"\nnew = "2"\nwhy = "w"\n',
     "exactly one of"),
    ('[[mutant]]\nclaim = "cnn.a"\nfile = "impl/m.py"\nold = "1 + 2"\nnew = "1"\nwhy = ""\n', "why must be"),
    ('[[mutant]]\nclaim = "cnn.a"\nfile = "impl/m.py"\nold = "1 + 2"\nnew = "1"\nwhy = "w"\nseed = 3\n', "unknown field"),
])
def test_bad_entries_are_refused_naming_the_entry(tmp_path, body, message):
    d = _write(tmp_path, body)
    with pytest.raises(MutantError, match=message) as e:
        load_mutants(d, root=tmp_path)
    assert "cnn.toml mutant 1" in str(e.value)


def test_an_old_text_found_twice_is_ambiguous(tmp_path):
    d = _write(tmp_path, '[[mutant]]\nclaim = "cnn.a"\nfile = "impl/m.py"\nold = "1"\nnew = "0"\nwhy = "w"\n',
               target="x = 1\ny = 1\n")
    with pytest.raises(MutantError, match="occurs 2 times"):
        load_mutants(d, root=tmp_path)


def test_exit_status_reads_as_the_mutants_fate():
    # pytest: 0 all passed, 1 some failed, 2 interrupted, 3 internal error, 4 usage error, 5 no tests
    assert [outcome(rc) for rc in (0, 1, 2, 3, 4, 5, None)] == \
        ["survived", "killed", "broken", "broken", "broken", "broken", "timeout"]


def test_the_mutants_folder_mirrors_the_registry():
    stems = {p.stem for p in MUTANTS_DIR.glob("*.toml")}
    assert stems <= set(SECTIONS), f"spec/mutants has files for no testable section: {stems - set(SECTIONS)}"


def test_the_ledger_shows_a_recorded_verdict_only_while_code_and_tests_are_unchanged(tmp_path):
    import json

    from spec.claim_mutants import fingerprint, ledger_mutants
    d = _write(tmp_path, '[[mutant]]\nclaim = "cnn.a"\nfile = "impl/m.py"\nold = "1 + 2"\nnew = "1 - 2"\nwhy = "flips the sum"\n')
    (tmp_path / "spec").mkdir()
    d.rename(tmp_path / "spec" / "mutants")
    (tmp_path / "properties").mkdir()
    test = tmp_path / "properties" / "test_m.py"
    test.write_text("def test_sum(): assert 1 + 2 == 3\n")
    (m,) = load_mutants(tmp_path / "spec" / "mutants", root=tmp_path)
    files = {"cnn.a": ["properties/test_m.py"]}
    runs = tmp_path / "runs"
    runs.mkdir()
    assert ledger_mutants(files, runs, tmp_path) == {"cnn.a": [{"file": "impl/m.py", "why": "flips the sum",
                                                                 "status": "not run"}]}
    (runs / "claims-cnn.json").write_text(json.dumps([{"claim": "cnn.a", "status": "killed",
                                                       "fingerprint": fingerprint(m, "cnn.a", files["cnn.a"], tmp_path)}]))
    assert ledger_mutants(files, runs, tmp_path)["cnn.a"][0]["status"] == "killed"
    test.write_text("def test_sum(): assert True\n")  # the tests changed: the old verdict no longer holds
    assert ledger_mutants(files, runs, tmp_path)["cnn.a"][0]["status"] == "not run"
    test.write_text("def test_sum(): assert 1 + 2 == 3\n")
    (tmp_path / "impl" / "m.py").write_text("x = 1 + 2  # edited\n")  # so did the code
    assert ledger_mutants(files, runs, tmp_path)["cnn.a"][0]["status"] == "not run"


def test_a_partial_run_keeps_the_verdicts_of_the_pairs_it_did_not_run():
    from spec.claim_mutants import merge_records
    old = [{"claim": "cnn.a", "file": "impl/m.py", "why": "one", "status": "killed"},
           {"claim": "cnn.a", "file": "impl/m.py", "why": "two", "status": "survived"},
           {"claim": "cnn.b", "file": "impl/m.py", "why": "one", "status": "killed"}]
    new = [{"claim": "cnn.a", "file": "impl/m.py", "why": "two", "status": "killed"}]
    merged = merge_records(old, new)
    # the same claim's other mutant and another claim's survive; the re-run pair is replaced
    assert sorted((r["claim"], r["why"], r["status"]) for r in merged) == [
        ("cnn.a", "one", "killed"), ("cnn.a", "two", "killed"), ("cnn.b", "one", "killed")]
