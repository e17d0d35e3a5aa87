import os
import warnings

import numpy as np
import pytest

from distdyn import kernels
from helpers import numpy_entropy, write_fake_dump


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    monkeypatch.setenv("DISTDYN_CACHE", str(tmp_path))
    kernels.load.cache_clear()
    yield tmp_path
    kernels.load.cache_clear()


needs_cc = pytest.mark.skipif(kernels.shutil.which(os.environ.get("CC") or "cc") is None, reason="no C compiler")


@needs_cc
def test_build_is_cached_under_the_source_hash_and_never_rewritten(fresh, monkeypatch):
    lib = kernels.build()
    assert lib.parent == fresh and lib.name.startswith("_kernels-") and lib == kernels.library_path()
    before = lib.stat()

    def no_compiler(*args, **kwargs):
        raise AssertionError("a second build ran the compiler")

    monkeypatch.setattr(kernels.subprocess, "run", no_compiler)
    assert kernels.build() == lib
    after = lib.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    assert not list(fresh.glob("*.tmp")) and not list(fresh.glob(".*.tmp"))


@needs_cc
def test_concurrent_builds_leave_one_valid_library(fresh):
    """Builders racing on a fresh cache (as metric jobs once did): each compiles its own temporary
    file, the first link wins, the others discard theirs; the one library loads."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        paths = list(pool.map(lambda _: kernels.build(), range(4)))
    assert len(set(paths)) == 1
    assert [p.name for p in fresh.iterdir()] == [paths[0].name]  # no temporary files left
    lib = kernels._open(paths[0])
    assert lib.distdyn_kernels_abi() == kernels.ABI


def test_a_library_in_place_is_never_replaced(tmp_path):
    """The loser of a race keeps its hands off the winner's file (a process may have loaded it)."""
    lib, tmp = tmp_path / "_kernels-x.so", tmp_path / "._kernels-x.so.1.tmp"
    lib.write_bytes(b"the winner's library")
    tmp.write_bytes(b"the loser's library")
    inode = lib.stat().st_ino
    kernels._publish(tmp, lib)
    assert lib.read_bytes() == b"the winner's library" and lib.stat().st_ino == inode
    assert not tmp.exists()
    fresh_tmp = tmp_path / "fresh.tmp"
    fresh_tmp.write_bytes(b"first build")
    kernels._publish(fresh_tmp, tmp_path / "_kernels-y.so")
    assert (tmp_path / "_kernels-y.so").read_bytes() == b"first build" and not fresh_tmp.exists()


@needs_cc
def test_a_library_built_before_is_loaded_without_compiling(fresh, monkeypatch, tmp_path):
    """DISTDYN_KERNELS=PATH (the workflow's metric jobs, after build_kernels) loads that file and
    never builds; a missing file or another library is the torch path, with a warning."""
    path = kernels.build()
    kernels.load.cache_clear()

    def no_build(*args, **kwargs):
        raise AssertionError("a metric job compiled the kernels")

    monkeypatch.setattr(kernels, "build", no_build)
    monkeypatch.setenv("DISTDYN_KERNELS", str(path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert kernels.load() is not None
    other = _library(tmp_path / "other.so", "int other(void) { return 0; }")
    older = _library(tmp_path / "older.so", "int distdyn_kernels_abi(void) { return 1; }")
    for bad, reason in [(tmp_path / "missing.so", "no such library"), (other, "not a distdyn kernel library"),
                        (older, "another version of _kernels.c")]:
        kernels.load.cache_clear()
        monkeypatch.setenv("DISTDYN_KERNELS", str(bad))
        with pytest.warns(UserWarning, match=f"{reason}.*torch path"):
            assert kernels.load() is None


def _library(path, source):
    """A shared library compiled from `source` (not the kernels)."""
    c = path.with_suffix(".c")
    c.write_text(source + "\n")
    kernels.subprocess.run(["cc", "-shared", "-fPIC", "-o", str(path), str(c)], check=True)
    return path


@needs_cc
def test_build_command_writes_what_the_metric_jobs_load(fresh, monkeypatch, tmp_path, capsys):
    """`python -m distdyn.kernels --out FILE` (the build_kernels rule): the library's path, or `torch`."""
    out = tmp_path / "kernels" / "library.txt"
    assert kernels.main(["--out", str(out)]) == 0
    path = out.read_text().strip()
    assert path == str(kernels.library_path()) and kernels._open(path)
    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    assert kernels.main(["--out", str(out)]) == 0
    assert out.read_text() == "torch\n" and "no-such-compiler-xyz" in capsys.readouterr().err
    monkeypatch.delenv("CC")
    monkeypatch.setenv("DISTDYN_KERNELS", "torch")
    kernels.main(["--out", str(out)])
    assert out.read_text() == "torch\n"


def test_no_compiler_falls_back_to_torch_with_a_warning(fresh, monkeypatch, tmp_path):
    """No library, and the engine asked for the kernels computes the torch path's numbers, bit for bit
    (the C path's spectrum and entropies differ from them in the last bits)."""
    from distdyn.metrics import compute_dump

    monkeypatch.setenv("CC", "no-such-compiler-xyz")
    with pytest.warns(UserWarning, match="no-such-compiler-xyz.*torch path"):
        assert kernels.load() is None
    blocks = np.random.default_rng(2).standard_t(3, size=(3, 6, 9, 16)).astype(np.float32)
    dump = write_fake_dump(tmp_path / "d.h5", blocks)
    asked, torch_path = compute_dump(dump, use_kernels=True), compute_dump(dump, use_kernels=False)
    np.testing.assert_array_equal(asked.spectra, torch_path.spectra)
    for key in torch_path.per_image:
        np.testing.assert_array_equal(asked.per_image[key], torch_path.per_image[key], err_msg=key)


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


# Channel counts odd and even, prime (7, 13, 191) and composite, for the library FFT's transforms
# and its Nyquist bin, and every tail (C mod 8) of the kernel's eight partial |x| sums; one token
# or many per image.
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


def test_per_token_results_match_numpy_whatever_the_grouping_into_images(lib):
    """Per token: np.histogram's entropy and the sum of |x|, for 95 tokens as 5 images of 19, one image of
    95 (token_entropy, which is token_metrics on one image) and 95 images of one; the groupings agree
    bit for bit."""
    from distdyn.metrics import _nlog2n

    x = np.random.default_rng(0).normal(size=(5, 19, 48)).astype(np.float32)
    tokens = x.reshape(-1, 48)
    edges = np.linspace(-2.0, 2.0, 101, dtype=np.float32)  # some values fall outside
    want_h, want_a = numpy_entropy(tokens, -2.0, 2.0), np.abs(tokens.astype(np.float64)).sum(-1)
    r = kernels.token_metrics(lib, x, edges, _nlog2n(48).numpy())
    one = kernels.token_metrics(lib, x.reshape(-1, 1, 48), edges, _nlog2n(48).numpy())
    runs = [(r.entropy.ravel(), r.abs_sum.ravel()), kernels.token_entropy(lib, tokens, edges, _nlog2n(48).numpy()),
            (one.entropy.ravel(), one.abs_sum.ravel())]
    for h, a in runs:
        np.testing.assert_allclose(h, want_h, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a, want_a, rtol=1e-12)
    for h, a in runs[1:]:
        np.testing.assert_array_equal(h, runs[0][0])
        np.testing.assert_array_equal(a, runs[0][1])


@pytest.mark.parametrize("C", [1, 5, 16, 48, 193])
def test_two_ranges_and_the_bounds_hint_give_np_histogram_entropies(lib, C):
    """Both histograms of one pass, counted by scatter or (bounds spanning few bins of the wide range)
    by comparisons; wrong bounds (values outside them) and NaN change nothing."""
    from distdyn.metrics import _nlog2n

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


def test_token_metrics_do_not_depend_on_the_thread_count_or_the_fft_blocks(lib, monkeypatch):
    x = np.random.default_rng(1).normal(size=(7, 20, 24)).astype(np.float32)
    edges = np.linspace(-4.0, 4.0, 101, dtype=np.float32)
    runs = []
    for threads, block in [(1, kernels.FFT_BLOCK), (2, kernels.FFT_BLOCK), (3, kernels.FFT_BLOCK), (2, 1),
                          (1, 3 * 480)]:
        monkeypatch.setattr(kernels.torch, "get_num_threads", lambda threads=threads: threads)
        monkeypatch.setattr(kernels, "FFT_BLOCK", block)  # values per rfft call: one image, three, all
        runs.append(kernels.token_metrics(lib, x, edges, np.zeros(25), edges2=edges / 2, bounds=(-1.0, 1.0)))
    for run in runs[1:]:
        for got, want in zip(run, runs[0]):
            np.testing.assert_array_equal(got, want)


def test_kernels_refuse_tokens_without_channels_or_bins(lib):
    with pytest.raises(ValueError, match="at least one channel"):
        kernels.token_metrics(lib, np.zeros((2, 3, 0), np.float32), np.float32([0, 1]), np.zeros(1))
    with pytest.raises(ValueError, match="at least one bin"):
        kernels.token_entropy(lib, np.zeros((3, 4), np.float32), np.float32([0.5]), np.zeros(5))


def _inputs(C=8):
    from distdyn.metrics import _nlog2n

    x = np.random.default_rng(3).normal(size=(2, 3, C)).astype(np.float32)
    return x, np.linspace(-1.0, 1.0, 11, dtype=np.float32), _nlog2n(C).numpy()


BAD_INPUTS = {  # what is wrong -> (keyword arguments of token_metrics changed, the error's words)
    "tokens not 3-D": (lambda x, e, n: {"x": x[0]}, r"must be \[images, N, C\], not of shape \(3, 8\)"),
    "no images": (lambda x, e, n: {"x": x[:0]}, "no tokens"),
    "no positions": (lambda x, e, n: {"x": x[:, :0]}, "no tokens"),
    "no channels": (lambda x, e, n: {"x": x[..., :0], "nlog2n": n[:1]}, "at least one channel"),
    "edges 2-D": (lambda x, e, n: {"edges": e[None]}, "edges must be one-dimensional"),
    "one edge": (lambda x, e, n: {"edges": e[:1]}, "at least one bin"),
    "NaN edge": (lambda x, e, n: {"edges": np.where(np.arange(11) == 4, np.nan, e)}, "finite, non-decreasing"),
    "decreasing edges": (lambda x, e, n: {"edges": e[::-1]}, "finite, non-decreasing"),
    "empty range": (lambda x, e, n: {"edges": np.zeros(11, np.float32)}, "span a range"),
    "edges2 of other bins": (lambda x, e, n: {"edges2": e[:6]}, "edges2 has 5 bins, edges 10"),
    "edges2 decreasing": (lambda x, e, n: {"edges2": e[::-1]}, "edges2 must be finite, non-decreasing"),
    "nlog2n short": (lambda x, e, n: {"nlog2n": n[:-1]}, "nlog2n has 8 values, the kernel reads 9"),
    "nlog2n long": (lambda x, e, n: {"nlog2n": np.zeros(10)}, "nlog2n has 10 values, the kernel reads 9"),
    "nlog2n 2-D": (lambda x, e, n: {"nlog2n": n[None]}, "nlog2n must be one-dimensional"),
    "bounds of 3": (lambda x, e, n: {"bounds": (0.0, 1.0, 2.0)}, "bounds has 3 values, the kernel reads 2"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_every_size_is_checked_before_the_kernel_sees_it(lib, case):
    x, edges, nlog2n = _inputs()
    change, message = BAD_INPUTS[case]
    args = {"x": x, "edges": edges, "nlog2n": nlog2n, **change(x, edges, nlog2n)}
    with pytest.raises(ValueError, match=message):
        kernels.token_metrics(lib, **args)


def test_token_entropy_wants_a_matrix_of_tokens(lib):
    x, edges, nlog2n = _inputs()
    with pytest.raises(ValueError, match=r"must be \[tokens, C\]"):
        kernels.token_entropy(lib, x, edges, nlog2n)


def test_strided_and_float64_tokens_give_the_contiguous_float32_results(lib):
    x, edges, nlog2n = _inputs()
    wide = np.repeat(x, 2, axis=-1)[..., ::2]  # the same values, every other element of a wider array
    assert not wide.flags.c_contiguous
    want = kernels.token_metrics(lib, x, edges, nlog2n, edges2=edges / 2, bounds=(-1.0, 1.0))
    for other in (wide, x.astype(np.float64)):
        got = kernels.token_metrics(lib, other, edges.astype(np.float64), nlog2n, edges2=edges / 2, bounds=(-1.0, 1.0))
        for g, w in zip(got, want):
            np.testing.assert_array_equal(g, w)


def test_buffers_are_checked_before_their_address_is_taken():
    a = np.zeros((4, 6))
    assert kernels._address("out", a, np.float64, (4, 6)) == a.ctypes.data
    for bad, words in [(a[:, ::2], "strided"), (a.astype(np.float32), "float32"), (a[:3], r"\(3, 6\)")]:
        with pytest.raises(ValueError, match=f"out must be a contiguous float64 array of shape \\(4, 6\\).*{words}"):
            kernels._address("out", bad, np.float64, (4, 6))


def test_the_kernel_itself_refuses_sizes_below_one(lib):
    """Its own guard, behind the checks above: -2 and nothing read or written."""
    x, edges, nlog2n = _inputs()
    out = np.zeros(16)
    for i0, i1, N, C, bins in [(0, 2, 3, 0, 10), (0, 2, 0, 8, 10), (0, 2, 3, 8, 0), (2, 1, 3, 8, 10),
                               (-1, 1, 3, 8, 10)]:
        code = lib.token_metrics_f32(x.ctypes.data, i0, i1, N, C, edges.ctypes.data, bins, nlog2n.ctypes.data,
                                     out.ctypes.data, out.ctypes.data, None, None, out.ctypes.data, None)
        assert code == -2
    assert not out.any()


def test_work_is_split_over_threads_without_gaps():
    assert kernels._split(10, 3) == [(0, 4), (4, 8), (8, 10)]
    assert kernels._split(2, 4) == [(0, 1), (1, 2)]
