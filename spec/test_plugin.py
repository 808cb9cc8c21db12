"""The claims plugin itself, run on small throw-away projects with pytester: each meta-fault is
caught, and a failing test turns its claim 'failing', never 'confirmed'."""

import json
import textwrap

import pytest

REGISTRY = """
[[claim]]
id = "demo.adds"
section = "Demo"
statement = "1 + 1 = 2"
kind = "identity"
verdict = "holds"
lines = "1"

[[claim]]
id = "demo.wrong"
section = "Demo"
statement = "2 + 2 = 5"
kind = "identity"
verdict = "false-as-written"
severity = "error"
lines = "2-3"
correction = "2 + 2 = 4"
reason = "arithmetic"

[[claim]]
id = "demo.story"
section = "Demo"
statement = "a story"
kind = "definition"
verdict = "not-testable"
lines = "4"
reason = "descriptive"
"""

GOOD_TESTS = """
import pytest

@pytest.mark.claim("demo.adds")
def test_adds(record_property):
    record_property("evidence", "exact")
    assert 1 + 1 == 2

@pytest.mark.claim("demo.wrong", role="refutes")
def test_refutes():
    assert 2 + 2 != 5

@pytest.mark.claim("demo.wrong", role="corrects")
def test_corrects():
    assert 2 + 2 == 4
"""


@pytest.fixture
def project(pytester, monkeypatch):
    # pytest prints full failure messages in its short summary under CI: keep the runs alike
    for var in ("CI", "BUILD_NUMBER"):
        monkeypatch.delenv(var, raising=False)
    pytester.makeini("[pytest]\nclaims_registry = claims\n")
    (pytester.path / "claims").mkdir()
    (pytester.path / "claims" / "demo.toml").write_text(REGISTRY)
    return pytester


def run(project, *args):
    return project.runpytest("-p", "spec.plugin", "--ledger", "out", "--notes", "none.tex", *args)


def ledger(project) -> dict:
    return json.loads((project.path / "out" / "ledger.json").read_text())


def meta_failure(result) -> str:
    text = result.stdout.str()
    assert "claims-meta" in text and "FAILED" in text
    return text


def test_a_consistent_project_confirms_its_claims(project):
    project.makepyfile(test_demo=GOOD_TESTS)
    result = run(project)
    result.assert_outcomes(passed=4)  # three tests and the meta-check
    claims = {c["id"]: c for c in ledger(project)["claims"]}
    assert claims["demo.adds"]["status"] == "confirmed"
    assert claims["demo.adds"]["evidence"] == "exact"
    assert claims["demo.wrong"]["status"] == "confirmed"
    assert {t["role"] for t in claims["demo.wrong"]["tests"]} == {"refutes", "corrects"}
    assert claims["demo.story"]["status"] == "untested"
    s = ledger(project)["summary"]
    assert (s["claims"], s["holds"], s["false-as-written"], s["not-testable"], s["failing"]) == (3, 1, 1, 1, 0)
    assert set(ledger(project)) >= {"generated", "environment", "summary", "claims"}
    assert (project.path / "out" / "ledger.md").exists() and (project.path / "out" / "index.html").exists()


def test_unknown_claim_id_is_caught(project):
    project.makepyfile(test_demo=GOOD_TESTS + textwrap.dedent("""
        @pytest.mark.claim("demo.nonexistent")
        def test_typo():
            assert True
    """))
    result = run(project)
    assert "marker names unknown claim 'demo.nonexistent'" in meta_failure(result)
    assert result.ret != 0


def test_claim_without_backing_test_is_caught(project):
    project.makepyfile(test_demo=GOOD_TESTS.replace('@pytest.mark.claim("demo.wrong", role="corrects")\n', ""))
    result = run(project)
    assert "demo.wrong" in meta_failure(result) and "has no corrects test" in result.stdout.str()
    assert result.ret != 0


def test_role_disagreeing_with_verdict_is_caught(project):
    project.makepyfile(test_demo=GOOD_TESTS + textwrap.dedent("""
        @pytest.mark.claim("demo.wrong")
        def test_claims_it_holds():
            assert True

        @pytest.mark.claim("demo.story")
        def test_tests_the_untestable():
            assert True
    """))
    result = run(project)
    text = meta_failure(result)
    assert "role 'verifies' disagrees with the verdict 'false-as-written' of 'demo.wrong'" in text
    assert "disagrees with the verdict 'not-testable' of 'demo.story'" in text


def test_a_failing_test_makes_its_claim_failing(project):
    project.makepyfile(test_demo=GOOD_TESTS.replace("assert 1 + 1 == 2", "assert 1 + 1 == 3"))
    result = run(project)
    result.assert_outcomes(passed=3, failed=1)
    claims = {c["id"]: c for c in ledger(project)["claims"]}
    assert claims["demo.adds"]["status"] == "failing"
    assert claims["demo.adds"]["tests"][0]["outcome"] == "failed"
    assert ledger(project)["summary"]["failing"] == 1


def test_a_claim_whose_tests_did_not_run_is_untested(project):
    project.makepyfile(test_demo=GOOD_TESTS)
    run(project, "-k", "adds")
    claims = {c["id"]: c for c in ledger(project)["claims"]}
    assert claims["demo.adds"]["status"] == "confirmed"
    assert claims["demo.wrong"]["status"] == "untested"


def test_ledger_under_xdist_matches_the_serial_one(project):
    project.makepyfile(test_demo=GOOD_TESTS.replace("assert 1 + 1 == 2", "assert 1 + 1 == 3"))
    run(project, "-n", "2")
    claims = {c["id"]: c for c in ledger(project)["claims"]}
    assert claims["demo.adds"]["status"] == "failing"
    assert claims["demo.wrong"]["status"] == "confirmed"
    assert claims["demo.adds"]["evidence"] == "exact"


@pytest.mark.parametrize("edit, message", [
    (lambda r: r.replace('lines = "1"', 'lines = "1"\ncolour = "red"'), "unknown field(s) ['colour']"),
    (lambda r: r + r[r.index("[[claim]]"): r.index("[[claim]]", 5)], "duplicate id"),
    (lambda r: r.replace('correction = "2 + 2 = 4"\n', ""), "needs a 'correction'"),
    (lambda r: r.replace('verdict = "holds"', 'verdict = "true"'), "verdict 'true'"),
    (lambda r: r.replace('id = "demo.adds"', 'id = "other.adds"'), "file's stem"),
    (lambda r: r.replace('severity = "error"\n', ""), "needs a 'severity'"),
    (lambda r: r.replace('severity = "error"', 'severity = "typo"'), "severity 'typo'"),
    (lambda r: r.replace('verdict = "holds"', 'verdict = "holds"\nseverity = "slip"', 1), "take a severity"),
])
def test_registry_errors_name_the_file_and_claim(project, edit, message):
    (project.path / "claims" / "demo.toml").write_text(edit(REGISTRY))
    project.makepyfile(test_demo=GOOD_TESTS)
    result = run(project)
    assert result.ret != 0
    err = result.stderr.str() + result.stdout.str()
    assert message in err and "demo.toml" in err


HELPERS = '''
def agrees(a, b):
    assert a == b


def compute(a):
    return 2 * a
'''

BACKING_TESTS = '''
import numpy as np
import pytest
from hypothesis import given, strategies as st

from helpers import agrees, compute as compute_elsewhere


def _close(a, b):
    assert abs(a - b) < 1e-12


def _compute(a):
    return a + 1


class TestGroup:
    def _check_it(self, x):
        assert x == 2

    @pytest.mark.claim("demo.adds")
    def test_method_helper(self):
        self._check_it(1 + 1)


@pytest.mark.claim("demo.adds")
def test_good_helper():
    _close(1 + 1, 2)


@pytest.mark.claim("demo.adds")
def test_good_imported_helper():
    agrees(1 + 1, 2)


@pytest.mark.claim("demo.adds")
def test_bad_imported_helper():
    compute_elsewhere(1)


@pytest.mark.claim("demo.adds")
def test_good_library_assert():
    np.testing.assert_equal(1 + 1, 2)


@pytest.mark.claim("demo.adds")
def test_good_raises_and_assert():
    with pytest.raises(ZeroDivisionError):
        1 / 0
    assert 1 + 1 == 2


@pytest.mark.claim("demo.adds")
@given(st.integers(0, 3))
def test_good_given(n):
    assert n + n == 2 * n


def test_unmarked_validation():
    with pytest.raises(ValueError):
        int("x")


@pytest.mark.claim("demo.adds")
def test_bad_figure():
    _compute(1)


@pytest.mark.claim("demo.adds")
def test_bad_validation():
    with pytest.raises(ValueError):
        int("x")
    pytest.raises(TypeError, int, None)


@pytest.mark.claim("demo.adds")
@pytest.mark.parametrize("n", [1, 2])
def test_bad_parametrized(n):
    _compute(n)


@pytest.mark.claim("demo.adds")
@given(st.integers(0, 3))
def test_bad_given(n):
    _compute(n)
'''


def test_backing_tests_must_assert_more_than_rejecting_input(project):
    project.makepyfile(test_demo=GOOD_TESTS, test_backing=BACKING_TESTS, helpers=HELPERS)
    project.syspathinsert()
    result = run(project)
    text = meta_failure(result)
    problems = [ln for ln in text.splitlines() if "test_backing.py::" in ln]
    flagged = {ln.split("::")[-1].split(":")[0] for ln in problems}
    assert flagged == {"test_bad_figure", "test_bad_validation", "test_bad_parametrized", "test_bad_given",
                       "test_bad_imported_helper"}
    assert sum("test_bad_parametrized" in ln for ln in problems) == 1  # once per function, not per case
    assert "test_backing.py::test_bad_figure: carries a claim marker but asserts nothing" in text
    assert "test_backing.py::test_bad_validation: only checks that input is rejected" in text
    # The flagged tests themselves pass: only the meta-check fails.
    result.assert_outcomes(passed=16, failed=1)


def test_claims_id_runs_only_that_claims_tests(project):
    project.makepyfile(test_demo=GOOD_TESTS)
    result = run(project, "--claims-id", "demo.wrong")
    result.assert_outcomes(passed=3, deselected=1)  # refutes, corrects and the meta-check
    claims = {c["id"]: c for c in ledger(project)["claims"]}
    assert claims["demo.wrong"]["status"] == "confirmed" and "demo.adds" not in claims


def test_claims_id_checks_the_backing_of_that_claim(project):
    project.makepyfile(test_demo=GOOD_TESTS.replace('@pytest.mark.claim("demo.wrong", role="corrects")\n', ""))
    result = run(project, "--claims-id", "demo.wrong")
    assert "demo.wrong" in meta_failure(result) and "has no corrects test" in result.stdout.str()


def test_unknown_claims_id_or_section_is_a_usage_error(project):
    project.makepyfile(test_demo=GOOD_TESTS)
    result = run(project, "--claims-id", "demo.nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown claim id(s) ['demo.nope']" in result.stderr.str()
    result = run(project, "--claims-section", "nope")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert "unknown section(s) ['nope']; sections: demo" in result.stderr.str()


def test_a_section_run_answers_for_its_own_section_only(project):
    (project.path / "claims" / "other.toml").write_text(
        REGISTRY.split("[[claim]]")[1].replace("demo.adds", "other.adds").join(["[[claim]]", ""]))
    project.makepyfile(test_demo=GOOD_TESTS, test_other=textwrap.dedent("""
        import pytest

        @pytest.mark.claim("other.adds", role="refutes")
        def test_wrong_role():
            assert True
    """))
    result = run(project, "--claims-section", "demo")
    result.assert_outcomes(passed=4, deselected=1)  # other's broken marker is other's run's business
    result = run(project, "--claims-section", "other")
    assert "role 'refutes' disagrees with the verdict 'holds' of 'other.adds'" in meta_failure(result)
