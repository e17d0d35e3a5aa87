import warnings

import numpy as np
import pytest

from distdyn import kernels


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTDYN_CACHE", str(tmp_path))
    kernels.load.cache_clear()
    yield tmp_path
    kernels.load.cache_clear()


def test_build_is_cached_under_the_source_hash(fresh):
    if kernels.shutil.which("cc") is None:
        pytest.skip("no C compiler")
    lib = kernels.build()
    assert lib.parent == fresh and lib.name.startswith("_kernels-")
    mtime = lib.stat().st_mtime_ns
    assert kernels.build() == lib and lib.stat().st_mtime_ns == mtime
    assert not list(fresh.glob("*.tmp"))


def test_no_compiler_falls_back_to_torch_with_a_warning(fresh, monkeypatch):
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    with pytest.warns(UserWarning, match="no-such-compiler-xyz.*torch path"):
        assert kernels.load() is None


def test_torch_path_can_be_forced(fresh, monkeypatch):
    monkeypatch.setenv("DISTDYN_KERNELS", "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.load() is None


def test_spectrum_sum_matches_numpy(fresh):
    lib = kernels.load()
    if lib is None:
        pytest.skip("no C compiler")
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(5, 7, 9)) + 1j * rng.normal(size=(5, 7, 9))).astype(np.complex64)
    np.testing.assert_allclose(kernels.spectrum_abs_sum(lib, z), np.abs(z.astype(np.complex128)).sum(1), rtol=1e-6)


def test_work_is_split_over_threads_without_gaps():
    assert kernels._split(10, 3) == [(0, 4), (4, 8), (8, 10)]
    assert kernels._split(2, 4) == [(0, 1), (1, 2)]
