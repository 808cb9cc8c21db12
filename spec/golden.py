"""Golden arrays: pytest-regressions' ndarrays_regression, with the checks DESIGN.md asks of golden files."""

from __future__ import annotations

from pytest_regressions.ndarrays_regression import NDArraysRegressionFixture


class GoldenArrays(NDArraysRegressionFixture):
    """pytest-regressions' ``ndarrays_regression`` with a dtype check added: it compares shapes and
    values but not dtypes (DESIGN.md, pitfalls), so a float32 file would pass a float64 test. Files
    are read with ``np.load(allow_pickle=False)`` (never pickle); a truncated or object-array file
    fails with a message naming it."""

    def _check_fn(self, obtained_filename, expected_filename):
        __tracebackhide__ = True
        expected, obtained = self._load_fn(expected_filename), self._load_fn(obtained_filename)
        for k in sorted(set(expected) & set(obtained)):
            if expected[k].dtype != obtained[k].dtype:
                raise AssertionError(f"golden file {expected_filename}: array {k!r} has dtype "
                                     f"{expected[k].dtype}, the test computes {obtained[k].dtype}")
        super()._check_fn(obtained_filename, expected_filename)
