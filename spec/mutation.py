"""Operator-level mutation testing of one impl/ module with mutmut, in a scratch copy of the checkout.

    python -m spec.mutation impl/cnn.py [TEST FILE ...] [--out report/mutation] [--sample N [--seed S]]

mutmut rewrites the module into ``mutants/`` under the folder it runs in, so each run works in its
own copy (``$TMPDIR/mp-mutation-<module>``): runs for different modules can go on side by side and
the checkout is never touched. The tests default to the section's own files
(``properties/test_<stem>.py`` and ``_edges.py``, ``spec/derivations/test_<stem>.py``, ``golden/test_<stem>.py``).
Writes ``<out>/<stem>.txt``: the kill rate and, for every survivor, its diff, so that each one
gets a test or is listed as equivalent. ``--sample N`` tests N mutants drawn at random (seeded)
from all of the module's: a kill rate with a binomial standard error, for modules whose full run
takes hours on two cores.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_checkout(dest: Path) -> None:
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT, check=True,
                           capture_output=True, text=True).stdout.split()
    for f in files:
        src = ROOT / f
        if src.is_file():
            (dest / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / f)


def _results(work: Path, env: dict) -> dict[str, str]:
    """mutant name -> mutmut's state (killed, survived, not checked, ...)."""
    res = subprocess.run(["mutmut", "results", "--all", "true"], cwd=work, env=env, capture_output=True, text=True)
    status = {}
    for r in (ln.strip() for ln in res.stdout.splitlines() if re.match(r"\s*impl\.", ln)):
        name, _, st = r.rpartition(": ")
        status[name] = st
    return status


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m spec.mutation", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("module", help="the module to mutate, e.g. impl/cnn.py")
    ap.add_argument("tests", nargs="*", help="test files to run against each mutant (default: the section's own)")
    ap.add_argument("--out", default=str(ROOT / "report" / "mutation"), help="report folder (default report/mutation)")
    ap.add_argument("--sample", type=int, default=None, metavar="N", help="test N mutants drawn at random")
    ap.add_argument("--seed", type=int, default=0, help="seed of the --sample draw (default 0)")
    ap.add_argument("--jobs", type=int, default=1, help="mutants tested side by side (mutmut --max-children)")
    args = ap.parse_args(argv)
    if args.sample is not None and args.sample < 1:
        ap.error(f"--sample: expected a positive count, got {args.sample}")
    module = Path(args.module)
    if module.suffix != ".py" or not (ROOT / module).is_file() or module.parts[0] != "impl":
        ap.error(f"module: expected a file under impl/, got {args.module!r}")
    stem = module.stem
    tests = args.tests or [t for t in (f"properties/test_{stem}.py", f"properties/test_{stem}_edges.py",
                                       f"spec/derivations/test_{stem}.py", f"golden/test_{stem}.py")
                           if (ROOT / t).is_file()]
    if not tests:
        ap.error(f"no tests found for {stem}: name them")
    work = Path(tempfile.gettempdir()) / f"mp-mutation-{stem}"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    copy_checkout(work)
    with open(work / "pyproject.toml", "a") as f:
        f.write(f"""
[tool.mutmut]
source_paths = ["{module.as_posix()}"]
pytest_add_cli_args = ["-p", "no:xdist", "-p", "no:cacheprovider", "-x", "-q", "-m", "not slow", "-k", "not claims-meta"]
pytest_add_cli_args_test_selection = {tests!r}
also_copy = ["spec", "conftest.py", "golden", "properties", "benchmarks", "impl"]
""".replace("'", '"'))
    env = dict(os.environ, HYPOTHESIS_PROFILE="ci")
    jobs = ["--max-children", str(args.jobs)]
    chosen, population = None, None
    if args.sample is not None:
        # a pattern that names no mutant: mutmut generates the mutants and their test selection, runs none
        subprocess.run(["mutmut", "run", *jobs, "impl.no-such-mutant"], cwd=work, env=env, capture_output=True, text=True)
        population = sorted(_results(work, env))
        chosen = random.Random(args.seed).sample(population, min(args.sample, len(population)))
    run = subprocess.run(["mutmut", "run", *jobs, *(chosen or [])], cwd=work, env=env, capture_output=True, text=True)
    status = _results(work, env)
    if chosen is not None:
        status = {n: s for n, s in status.items() if n in set(chosen)}
    if run.returncode != 0 and not status:
        # mutmut stopped before testing any mutant (most often: the tests fail on the unmutated
        # code); a kill rate of 0 of 0 would read as a result.
        print(f"mutmut failed (exit {run.returncode}) before testing any mutant:\n"
              f"{run.stdout[-3000:]}\n{run.stderr[-3000:]}", file=sys.stderr)
        return 1
    killed = sum(s == "killed" for s in status.values())
    survived = [n for n, s in status.items() if s == "survived"]
    total = sum(s in ("killed", "survived", "timeout") for s in status.values())
    rate = killed / max(total, 1)
    drawn = "" if chosen is None else (f"; a sample of {len(chosen)} of {len(population)} mutants (seed {args.seed}), "
                                       f"standard error {100 * math.sqrt(rate * (1 - rate) / max(total, 1)):.1f} %")
    lines = [f"# mutation report: {module} against {' '.join(tests)}",
             f"killed {killed} of {total} ({100 * rate:.0f} %); survived {len(survived)}{drawn}",
             f"other states: {sorted({s for s in status.values()} - {'killed', 'survived'})}", ""]
    for n in survived:
        diff = subprocess.run(["mutmut", "show", n], cwd=work, env=env, capture_output=True, text=True).stdout
        lines += [diff.strip(), ""]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.txt").write_text("\n".join(lines))
    print("\n".join(lines[:2]))
    print(f"survivors' diffs: {out / (stem + '.txt')}")
    if run.returncode != 0:
        print(run.stdout[-2000:], run.stderr[-2000:], file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
