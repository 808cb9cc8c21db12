"""Golden files are data: a damaged or hostile file fails its comparison with a message naming it,
and nothing in golden/data is ever unpickled."""

import zipfile
from pathlib import Path

import numpy as np
import pytest

from spec.golden import GoldenArrays

DATA = Path(__file__).parent / "data"


def _compare(tmp_path, expected: dict | None, obtained: dict, raw: bytes | None = None):
    exp, obt = tmp_path / "expected.npz", tmp_path / "obtained.npz"
    if raw is not None:
        exp.write_bytes(raw)
    else:
        np.savez(exp, **expected)
    np.savez(obt, **obtained)
    fixture = GoldenArrays.__new__(GoldenArrays)  # _check_fn needs only the tolerances
    fixture._tolerances_dict, fixture._default_tolerance = {}, dict(atol=1e-12, rtol=1e-12)
    fixture._check_fn(obt, exp)
    return exp


def test_matching_file_passes(tmp_path):
    _compare(tmp_path, {"a": np.arange(3.0)}, {"a": np.arange(3.0)})


def test_wrong_dtype_fails_naming_the_file(tmp_path):
    with pytest.raises(AssertionError, match=r"expected\.npz.*'a'.*float32"):
        _compare(tmp_path, {"a": np.arange(3.0, dtype=np.float32)}, {"a": np.arange(3.0)})


def test_wrong_shape_fails(tmp_path):
    with pytest.raises(AssertionError, match="[Ss]hape"):
        _compare(tmp_path, {"a": np.zeros((2, 3))}, {"a": np.zeros((3, 2))})


def test_truncated_file_fails_naming_the_file(tmp_path):
    good = tmp_path / "good.npz"
    np.savez(good, a=np.arange(100.0))
    with pytest.raises(OSError, match="expected.npz"):
        _compare(tmp_path, None, {"a": np.arange(100.0)}, raw=good.read_bytes()[:200])


def test_object_array_is_refused_and_never_unpickled(tmp_path):
    class Boom:
        def __reduce__(self):
            return (Path(tmp_path / "ran").write_text, ("pickle code ran",))

    exp = tmp_path / "hostile.npz"
    np.savez(exp, a=np.array([Boom()], dtype=object))
    with pytest.raises(OSError, match="expected.npz"):
        _compare(tmp_path, None, {"a": np.zeros(1)}, raw=exp.read_bytes())
    assert not (tmp_path / "ran").exists()


def test_every_stored_golden_file_is_plain_numeric_data():
    files = sorted(DATA.glob("*.npz"))
    assert files
    for f in files:
        with zipfile.ZipFile(f) as z:
            assert all(n.endswith(".npy") for n in z.namelist()), f
        with np.load(f, allow_pickle=False) as d:  # raises on any object array
            for k in d.files:
                assert d[k].dtype.kind in "fiubc", f"{f.name}: array {k!r} has dtype {d[k].dtype}"


def test_every_golden_file_says_how_it_was_made():
    import tomllib

    manifest = tomllib.loads((DATA / "MANIFEST.toml").read_text())
    stems = {f.stem for f in DATA.glob("*.npz")}
    assert stems == set(manifest), f"npz without a MANIFEST entry: {sorted(stems - set(manifest))}; " \
                                   f"entries without a file: {sorted(set(manifest) - stems)}"
    for name, entry in manifest.items():
        assert {"test", "versions"} <= set(entry), name
