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

import re
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
    group.addoption("--claims-id", action="append", default=[], metavar="ID",
                    help="only run the tests whose claim markers name this claim id (repeatable)")
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
    """Fails when markers and registry disagree (see module docstring), or when a test that carries a
    claim marker cannot back a claim (DESIGN.md, "Claims"). The backing rules read the test's source
    (an AST check of the function body; nothing is run):

    * a backing test must assert: an ``assert`` or ``raise`` statement, ``pytest.raises``,
      ``pytest.warns`` or ``pytest.fail``, a call of a function or method whose name starts with
      ``assert``, ``_assert``, ``check_`` or ``expect`` (``torch.testing.assert_close``,
      ``result.assert_outcomes``), ``gradcheck``/``gradgradcheck``, a golden fixture's ``.check(...)``,
      or a call of a helper of the test suite (a function defined in the test's module or imported
      from another file of the checkout outside impl/, or a method of the test's class called via
      ``self.``) that itself asserts by these rules;
    * a test whose only assertions are ``pytest.raises`` is an input-validation test, and those back
      no claim either.

    A test whose source cannot be read is given the benefit of the doubt.
    """

    ASSERTING_RE = re.compile(r"_?assert|check_|expect(?:_|$)")
    ASSERTING_NAMES = frozenset({"warns", "deprecated_call", "fail", "check", "gradcheck", "gradgradcheck"})

    def __init__(self, *, problems: list[str], **kw):
        super().__init__(**kw)
        self.problems = problems

    @classmethod
    def assertion_kinds(cls, fn, root: Path, owner=None, memo: dict | None = None) -> frozenset[str]:
        """What ``fn``'s body asserts: a subset of {"assert", "raises", "unknown"} (empty: nothing).

        Stops at the first real assertion: the rules only ask whether there is one."""
        import ast
        import inspect

        memo = {} if memo is None else memo
        key = (fn, owner)
        if key in memo:
            return memo[key]
        memo[key] = frozenset()  # a helper that calls itself adds nothing through that call
        node = cls._function_node(fn, memo.setdefault("files", {}))
        if node is None:
            memo[key] = frozenset({"unknown"})
            return memo[key]
        glb = getattr(fn, "__globals__", {})
        kinds: set[str] = set()
        for n in (n for stmt in node.body for n in ast.walk(stmt)):  # the body: decorators are not the test
            if "assert" in kinds:
                break
            if isinstance(n, (ast.Assert, ast.Raise)):
                kinds.add("assert")
                continue
            if not isinstance(n, ast.Call):
                continue
            f = n.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
            if name is None:
                continue
            if name == "raises":
                kinds.add("raises")
            elif name in cls.ASSERTING_NAMES or cls.ASSERTING_RE.match(name):
                kinds.add("assert")
            else:
                if isinstance(f, ast.Name):
                    target = glb.get(name)
                elif isinstance(f.value, ast.Name) and f.value.id == "self" and owner is not None:
                    target = getattr(owner, name, None)
                else:
                    continue
                if inspect.isfunction(target) and cls._in_checkout(target, root, memo.setdefault("paths", {})):
                    kinds |= cls.assertion_kinds(target, root, owner, memo)
        memo[key] = frozenset(kinds)
        return memo[key]

    @staticmethod
    def _function_node(fn, files: dict):
        """The ``def`` of ``fn`` in its file's syntax tree (each file parsed once), or None."""
        import ast

        code = getattr(fn, "__code__", None)
        if code is None:
            return None
        if code.co_filename not in files:
            try:
                tree = ast.parse(Path(code.co_filename).read_text(encoding="utf-8"))
            except (OSError, SyntaxError, UnicodeDecodeError, ValueError):
                tree = None
            index, todo = {}, [] if tree is None else list(tree.body)
            while todo:  # module-level functions and methods (of nested classes too)
                n = todo.pop()
                if isinstance(n, ast.ClassDef):
                    todo.extend(n.body)
                elif isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    # co_firstlineno is the line of the first decorator, or of the def without one
                    index[min([n.lineno] + [d.lineno for d in n.decorator_list])] = n
            files[code.co_filename] = index
        node = files[code.co_filename].get(code.co_firstlineno)
        return node if node is not None and node.name == fn.__name__ else None

    @staticmethod
    def _in_checkout(fn, root: Path, paths: dict) -> bool:
        filename = fn.__code__.co_filename
        if filename not in paths:
            # Helpers of the test suite, not the implementation under test: impl/ raises on bad
            # input, which is no assertion of a test that calls it.
            path = Path(filename).resolve()
            paths[filename] = path.is_relative_to(root) and not path.is_relative_to(root / "impl") \
                and "site-packages" not in path.parts
        return paths[filename]

    @classmethod
    def backing_problem(cls, item, root: Path, memo: dict) -> str | None:
        """Why ``item`` (a test with a claim marker) cannot back a claim, or None."""
        import inspect

        fn = getattr(item, "function", None)
        if fn is None:
            return None
        fn = inspect.unwrap(getattr(getattr(fn, "hypothesis", None), "inner_test", fn))
        kinds = cls.assertion_kinds(fn, Path(root).resolve(), getattr(item, "cls", None), memo)
        name = item.nodeid.split("[", 1)[0]
        if "unknown" in kinds:
            return None
        if not kinds:
            return (f"{name}: carries a claim marker but asserts nothing (no assert, pytest.raises or "
                    f"assert_*/check_* call), so it cannot back a claim")
        if kinds == {"raises"}:
            return (f"{name}: only checks that input is rejected (pytest.raises and nothing else); "
                    f"input-validation tests back no claim: drop its claim marker")
        return None

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
        raise pytest.UsageError(f"--claims-section: unknown section(s) {sorted(unknown_sections)}; "
                                f"sections: {', '.join(sorted({c.chapter for c in claims.values()}))}")
    ids = set(config.getoption("claims_id"))
    unknown_ids = ids - set(claims)
    if unknown_ids:
        raise pytest.UsageError(f"--claims-id: unknown claim id(s) {sorted(unknown_ids)}")
    problems: list[str] = []
    roles_seen: dict[str, set[str]] = {}
    keep = []
    for item in items:
        marks = claim_marks(item)
        item.user_properties.append(("claims", [[c, r] for c, r in marks]))
        # A section's run keeps the tests of its claims and every test in its own files
        # (properties/test_<stem>.py, ...), so its bad-input tests run too; a claim's run keeps
        # only the tests whose markers name it. Only the kept tests are checked: a section's run
        # answers for its own section.
        in_sections = not sections or any(c.split(".", 1)[0] in sections for c, _ in marks) \
            or Path(str(item.fspath)).stem.removeprefix("test_") in sections
        in_ids = not ids or any(c in ids for c, _ in marks)
        if not (in_sections and in_ids):
            continue
        keep.append(item)
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
    # A full collection, or an explicit --claims-section / --claims-id, must back every claim it covers.
    if sections or ids or _full_collection(config):
        for cid, claim in claims.items():
            if (sections and claim.chapter not in sections) or (ids and cid not in ids):
                continue
            missing = [r for r in REQUIRED_ROLES[claim.verdict] if r not in roles_seen.get(cid, set())]
            if missing:
                problems.append(f"{cid} ({claim.file}): verdict {claim.verdict!r} has no {'/'.join(missing)} test")
    # Backing tests must assert something, and something more than rejecting bad input.
    memo: dict = {}
    reported: set[str] = set()
    for item in keep:
        if claim_marks(item):
            problem = ClaimsMeta.backing_problem(item, config.rootpath, memo)
            if problem and problem not in reported:
                reported.add(problem)
                problems.append(problem)
    if sections or ids:
        kept = {id(i) for i in keep}
        deselected = [i for i in items if id(i) not in kept]
        if deselected:
            config.hook.pytest_deselected(items=deselected)
        items[:] = keep
    meta = ClaimsMeta.from_parent(session, name=META_NAME, problems=problems)
    meta.path = _registry_dir(config)
    items.insert(0, meta)


class _Recorder:
    """Collects each test's outcome, duration, properties and skip reason; one per config (pytester runs nest)."""

    def __init__(self, config):
        self.config = config

    def pytest_runtest_logreport(self, report):
        # Runs in the controller (and in a plain run); under xdist the worker's reports arrive here.
        if hasattr(self.config, "workerinput"):
            return
        res = self.config._claim_results.setdefault(report.nodeid, {"outcome": "passed", "seconds": 0.0, "props": {}})
        res["seconds"] += getattr(report, "duration", 0.0)
        for k, v in report.user_properties:
            if k in ("evidence", "figure", "caption", "figure_claims"):
                res["props"].setdefault(k, [])
                if v not in res["props"][k]:
                    res["props"][k].append(v)
            else:
                res["props"][k] = v
        if report.failed:
            res["outcome"] = "failed" if report.when == "call" else "error"
        elif report.skipped and res["outcome"] == "passed":
            res["outcome"] = "skipped"
            res["reason"] = _skip_reason(report)


def _skip_reason(report) -> str:
    """The reason of a skip: longrepr is (path, line, "Skipped: why") for skip/importorskip/skipif."""
    lr = report.longrepr
    if isinstance(lr, tuple) and len(lr) == 3:
        why = str(lr[2])
    else:
        why = str(lr or "skipped")
    return why.removeprefix("Skipped: ").strip()[:300] or "skipped"


def _environment() -> dict:
    from spec.ledger import environment

    return environment()


def build_ledger(claims, results, notes_path: Path | None) -> dict:
    """The ledger dict of DESIGN.md from the registry and the per-test results (see spec/ledger.py)."""
    from spec.ledger import build_ledger as build

    return build(claims, results, notes_path)


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
    ids = set(config.getoption("claims_id", default=None) or [])
    if ids:
        claims = {k: v for k, v in claims.items() if k in ids}
    if sections or ids:
        from spec.ledger import build_ledger as build

        ledger = build(claims, config._claim_results, notes, scoped=True)
    else:
        ledger = build_ledger(claims, config._claim_results, notes)
    given = config.getoption("notes")
    if notes is None and given:
        ledger["notes_error"] = f"notes file {given} does not exist"
    write_reports(ledger, Path(out), notes if ledger.get("notes_file") else None)
    config._ledger = ledger


def pytest_terminal_summary(terminalreporter, config):
    ledger = getattr(config, "_ledger", None)
    if ledger is None:
        return
    from spec.report import severity_summary_lines

    s = ledger["summary"]
    terminalreporter.write_sep("=", "claims ledger")
    terminalreporter.write_line(
        f"{s['claims']} claims: {s['holds']} hold, {s['false-as-written']} false as written, "
        f"{s['conditional']} conditional, {s['not-testable']} not testable; {s['failing']} failing; "
        f"notes lines covered {s['notes_lines_covered']}/{s['notes_lines']}")
    for line in severity_summary_lines(ledger, width=terminalreporter._tw.fullwidth):
        terminalreporter.write_line(line)
    if ledger.get("notes_file") is None and not ledger.get("notes_error"):
        terminalreporter.write_line("notes file not found: line coverage not computed (use --notes PATH)")
    terminalreporter.write_line(f"written to {config.getoption('ledger')}/ledger.json, ledger.md, index.html")
