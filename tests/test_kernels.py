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


@pytest.fixture(scope="module")
def lib():
    lib = kernels.load()
    if lib is None:
        pytest.skip("no C compiler")
    return lib


# Channel counts for every FFT pass (radix 4, 2, 3, a plain DFT for 5, 7, 13, 191) and the
# 8 x 8 transpose's tail; position counts that fill 16-token blocks exactly, partly, or not at all.
@pytest.mark.parametrize("C", [1, 2, 3, 7, 12, 13, 25, 30, 64, 100, 191, 192, 384])
@pytest.mark.parametrize("N", [1, 16, 17, 50])
def test_token_metrics_spectrum_matches_numpy_fft(lib, C, N):
    rng = np.random.default_rng(C * 100 + N)
    x = (rng.standard_t(3, size=(3, N, C)) + 0.5).astype(np.float32)
    edges = np.linspace(x.min(), x.max(), 101, dtype=np.float32)
    r = kernels.token_metrics(lib, x, edges, np.zeros(C + 1))
    want = np.abs(np.fft.rfft(x.astype(np.float64), axis=-1)).sum(1)
    np.testing.assert_allclose(r.spectrum, want, rtol=2e-6, atol=2e-6 * want.max())
    np.testing.assert_allclose(r.abs_sum, np.abs(x.astype(np.float64)).sum(-1), rtol=1e-12)
    np.testing.assert_allclose(r.channel_abs, np.abs(x.astype(np.float64)).sum(1), rtol=1e-12)
    assert r.entropy2 is None


def test_token_metrics_entropy_is_the_entropy_kernels(lib):
    from distdyn.metrics import _nlog2n

    x = np.random.default_rng(0).normal(size=(5, 19, 48)).astype(np.float32)
    edges = np.linspace(-2.0, 2.0, 101, dtype=np.float32)  # some values fall outside
    r = kernels.token_metrics(lib, x, edges, _nlog2n(48).numpy())
    want_h, want_a = kernels.token_entropy(lib, x.reshape(-1, 48), edges, _nlog2n(48).numpy())
    np.testing.assert_array_equal(r.entropy.ravel(), want_h)
    np.testing.assert_array_equal(r.abs_sum.ravel(), want_a)


@pytest.mark.parametrize("C", [1, 5, 16, 48, 193])
def test_two_ranges_and_the_bounds_hint_give_np_histogram_entropies(lib, C):
    """Both histograms of one pass, counted by scatter or (bounds spanning few bins of the wide range)
    by comparisons; wrong bounds (values outside them) and NaN change nothing."""
    from distdyn.metrics import _nlog2n
    from test_metrics import numpy_entropy

    rng = np.random.default_rng(C)
    x = rng.standard_t(3, size=(4, 21, C)).astype(np.float32)
    x[0, 0, 0] = np.nan
    lo, hi = float(np.nanmin(x)), float(np.nanmax(x))
    tokens = x.reshape(-1, C)
    for wide in [(lo, hi), (30 * lo, 30 * hi), (lo - 500.0, 20 * hi), (0.5 * lo, 0.5 * hi)]:
        edges = np.linspace(np.float32(wide[0]), np.float32(wide[1]), 101, dtype=np.float32)
        own = np.linspace(np.float32(lo), np.float32(hi), 101, dtype=np.float32)
        for bounds in [None, (lo, hi), (0.1 * lo, 0.1 * hi), (0.0, 0.0)]:
            r = kernels.token_metrics(lib, x, edges, _nlog2n(C).numpy(), edges2=own, bounds=bounds)
            np.testing.assert_allclose(r.entropy.ravel(), numpy_entropy(tokens, *wide), rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(r.entropy2.ravel(), numpy_entropy(tokens, lo, hi), rtol=1e-12, atol=1e-12)


def test_token_metrics_do_not_depend_on_the_thread_count(lib, monkeypatch):
    x = np.random.default_rng(1).normal(size=(7, 20, 24)).astype(np.float32)
    edges = np.linspace(-4.0, 4.0, 101, dtype=np.float32)
    runs = []
    for threads in (1, 2, 3):
        monkeypatch.setattr(kernels.torch, "get_num_threads", lambda: threads)
        runs.append(kernels.token_metrics(lib, x, edges, np.zeros(25), edges2=edges / 2, bounds=(-1.0, 1.0)))
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            np.testing.assert_array_equal(got, want)


def test_kernels_refuse_tokens_without_channels_or_bins(lib):
    with pytest.raises(ValueError, match="at least one channel"):
        kernels.token_metrics(lib, np.zeros((2, 3, 0), np.float32), np.float32([0, 1]), np.zeros(1))
    with pytest.raises(ValueError, match="at least one bin"):
        kernels.token_entropy(lib, np.zeros((3, 4), np.float32), np.float32([0.5]), np.zeros(5))


def test_work_is_split_over_threads_without_gaps():
    assert kernels._split(10, 3) == [(0, 4), (4, 8), (8, 10)]
    assert kernels._split(2, 4) == [(0, 1), (1, 2)]
