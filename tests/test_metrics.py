import math

import h5py
import numpy as np
import pytest
import torch

from distdyn import kernels, metrics
from helpers import channel_spectrum
from distdyn.metrics import (compute_dump, compute_in_memory, entropy_wide, histogram_edges,
                             layer_rows, outlier_stats, token_entropy)
from distdyn.tables import LAYER_COLUMNS, SPECTRA_COLUMNS, bootstrap_ci
from helpers import numpy_entropy, write_fake_dump


@pytest.fixture(params=[True, False], ids=["c", "torch"])
def use_kernels(request):
    """compute_dump's use_kernels: the C kernels (skipped where none can be built: compute_dump would
    fall back to torch, and this case would test the torch path a second time), or the torch path."""
    if request.param and kernels.load() is None:
        pytest.skip("no C kernels (no C compiler); the torch case runs")
    return request.param


def reference(blocks, bins=100):
    """The authors' analysis, literally: numpy FFT over the whole array, one np.histogram per token."""
    F = np.transpose(blocks, (0, 1, 3, 2))  # [L, B, C, N] like their [L, B, C, H, W]
    C = F.shape[2]
    X = np.abs(np.fft.fft(F, axis=2) / C)
    S = X.mean(axis=(1, 3))
    lo, hi = F.min(), F.max()
    H = np.zeros(F.shape[0])
    for l in range(F.shape[0]):
        vals = []
        for b in range(F.shape[1]):
            for n in range(F.shape[3]):
                counts, _ = np.histogram(F[l, b, :, n], bins=bins, range=(lo, hi))
                p = counts / C
                p = p[p > 0]
                vals.append(-(p * np.log2(p)).sum())
        H[l] = np.mean(vals)
    return {"spectra": S[:, : C // 2], "frequency_intensity": S.mean(1), "entropy": H,
            "activation_magnitude": np.abs(F).mean(axis=(1, 2, 3))}


def test_constant_token_has_zero_entropy():
    x = torch.full((1, 1, 16), 0.3)
    assert token_entropy(x, histogram_edges(-1.0, 1.0, 100)).item() == 0.0


def test_one_value_per_bin_gives_log2_bins():
    edges = histogram_edges(0.0, 1.0, 100)
    centers = ((edges[:-1] + edges[1:]) / 2).view(1, 1, 100)
    assert token_entropy(centers, edges).item() == pytest.approx(math.log2(100), rel=1e-12)


def test_values_on_edges_follow_numpy():
    edges = histogram_edges(-2.0, 3.0, 10)
    x = torch.cat([edges, torch.tensor([-2.0, 3.0, 0.123])]).view(1, 1, -1)
    counts, _ = np.histogram(x.numpy().ravel(), bins=10, range=(np.float32(-2.0), np.float32(3.0)))
    p = counts[counts > 0] / x.shape[-1]
    assert token_entropy(x, edges).item() == pytest.approx(-(p * np.log2(p)).sum(), rel=1e-12)


def test_parseval_for_the_channel_fft():
    x = torch.randn(3, 5, 24, dtype=torch.float64)
    mag = channel_spectrum(x)  # |FFT| / C
    torch.testing.assert_close((mag ** 2).sum(-1), (x ** 2).sum(-1) / 24)


def test_global_range_outlier_lowers_other_layers_but_per_layer_does_not():
    rng = np.random.default_rng(0)
    blocks = rng.normal(size=(3, 4, 9, 32)).astype(np.float32)
    with_outlier = blocks.copy()
    with_outlier[2, 0, 0, 0] = 500.0
    g0, g1 = compute_in_memory(blocks)["entropy"], compute_in_memory(with_outlier)["entropy"]
    assert (g1[:2] < g0[:2] - 1.0).all()
    p0 = compute_in_memory(blocks, entropy_range="per_layer")["entropy"]
    p1 = compute_in_memory(with_outlier, entropy_range="per_layer")["entropy"]
    np.testing.assert_array_equal(p0[:2], p1[:2])


def test_engine_matches_the_authors_reference(tmp_path):
    rng = np.random.default_rng(1)
    blocks = (rng.normal(size=(3, 5, 16, 24)) * np.linspace(0.5, 3, 3)[:, None, None, None]).astype(np.float32)
    path = write_fake_dump(tmp_path / "d.h5", blocks)
    m = compute_dump(path, chunk_images=2)
    ref = reference(blocks)
    np.testing.assert_allclose(m.spectra, ref["spectra"], rtol=1e-5)
    for key in ("frequency_intensity", "entropy", "activation_magnitude"):
        np.testing.assert_allclose(m.per_image[key].mean(1), ref[key], rtol=1e-5, err_msg=key)


@pytest.mark.parametrize("chunk", [1, 3, 4, 10, 64])
@pytest.mark.parametrize("entropy_range", ["global", "per_layer"])
def test_streaming_equals_in_memory(tmp_path, chunk, entropy_range, use_kernels):
    rng = np.random.default_rng(2)
    blocks = rng.standard_t(3, size=(4, 10, 9, 16)).astype(np.float32)
    grads = rng.random((4, 10)).astype(np.float32)
    path = write_fake_dump(tmp_path / "d.h5", blocks, grads)
    m = compute_dump(path, chunk_images=chunk, entropy_range=entropy_range, use_kernels=use_kernels)
    ref = compute_in_memory(blocks, grads, entropy_range=entropy_range)
    # The CPU engine's spectrum is scipy.fft's float32 rfft, the in-memory one torch's (as the torch path's).
    fft_rtol = 1e-6 if use_kernels else 1e-9
    np.testing.assert_allclose(m.spectra, ref["spectra"], rtol=fft_rtol)
    for key in metrics.SCALAR_METRICS:
        rtol = fft_rtol if key == "frequency_intensity" else 1e-9
        np.testing.assert_allclose(m.per_image[key].mean(1), ref[key], rtol=rtol, err_msg=key)
    np.testing.assert_allclose(m.channel_abs.mean(1), ref["channel_abs"], rtol=1e-12)
    rows = layer_rows(m, outlier_multiple=1.5).set_index(["metric", "layer"]).value
    for key, want in zip(metrics.OUTLIER_METRICS, outlier_stats(ref["channel_abs"], 1.5)):
        np.testing.assert_allclose(rows[key].to_numpy(), want, rtol=1e-12, err_msg=key)


# ---------------------------------------------------------------- outlier channels (beyond the paper)


def outlier_dump_blocks():
    """[3, 6, 9, 16]: layer 1 plain noise, layer 2 with channel 5 at 100x, layer 3 with channels 2 and 7
    at 10x and channel 3 at 3x."""
    rng = np.random.default_rng(7)
    blocks = rng.normal(size=(3, 6, 9, 16)).astype(np.float32)
    blocks[1, ..., 5] *= 100
    blocks[2, ..., [2, 7]] *= 10
    blocks[2, ..., 3] *= 3
    return blocks


def direct_outliers(blocks, k):
    """The definition, literally: per layer the mean |x| of each channel over images and positions."""
    m = np.abs(blocks.astype(np.float64)).mean(axis=(1, 2))  # [L, C]
    med = np.median(m, axis=1)
    return m.max(axis=1) / med, (m > k * med[:, None]).sum(axis=1)


@pytest.mark.parametrize("chunk", [1, 4, 64])
def test_outlier_metrics_match_a_direct_computation(tmp_path, use_kernels, chunk):
    blocks = outlier_dump_blocks()
    path = write_fake_dump(tmp_path / "d.h5", blocks)
    rows = layer_rows(compute_dump(path, chunk_images=chunk, use_kernels=use_kernels), outlier_multiple=6)
    rows = rows.set_index(["metric", "layer"]).value
    ratio, count = direct_outliers(blocks, 6)
    np.testing.assert_allclose(rows["outlier_ratio"].to_numpy(), ratio, rtol=1e-12)
    np.testing.assert_array_equal(rows["outlier_channels"].to_numpy(), count)
    assert rows["outlier_channels"].tolist() == [0, 1, 2]  # the 3x channel stays below 6x the median
    assert rows["outlier_ratio"][1] < 2 and 70 < rows["outlier_ratio"][2] < 130


def test_outlier_interval_resamples_images_like_the_others(tmp_path):
    blocks = outlier_dump_blocks()
    m = compute_dump(write_fake_dump(tmp_path / "d.h5", blocks))
    rows = layer_rows(m, resamples=50, outlier_multiple=6).set_index(["metric", "layer"])
    idx = np.random.default_rng(0).integers(0, blocks.shape[1], size=(50, blocks.shape[1]))  # bootstrap_ci's draws
    for layer in range(3):
        means = np.stack([m.channel_abs[layer, i].mean(0) for i in idx])  # [resamples, C]
        for key, stat in zip(metrics.OUTLIER_METRICS, outlier_stats(means, 6)):
            got = rows.loc[(key, layer + 1), ["ci_low", "ci_high"]].to_numpy(float)
            np.testing.assert_allclose(got, np.percentile(stat, [2.5, 97.5]), rtol=1e-12, err_msg=key)


def test_outlier_stats_edge_cases():
    ratio, count = outlier_stats(np.array([[1.0, 1.0, 1.0, 1.0], [0.0, 0.0, 0.0, 5.0], [1.0, 2.0, 3.0, 30.0]]), 6)
    np.testing.assert_array_equal(ratio, [1.0, np.nan, 12.0])  # median 0: no ratio
    np.testing.assert_array_equal(count, [0.0, np.nan, 1.0])  # strictly above 6 x 2.5


def test_both_entropies_whatever_the_configured_range(tmp_path, use_kernels):
    """entropy_per_layer is the engine with entropy_range per_layer, entropy_global with global, and
    `entropy` is the configured one; a 100x channel in one layer lowers the others' global entropy only."""
    blocks = outlier_dump_blocks()
    path = write_fake_dump(tmp_path / "d.h5", blocks)
    g = compute_dump(path, entropy_range="global", use_kernels=use_kernels, chunk_images=4).per_image
    p = compute_dump(path, entropy_range="per_layer", use_kernels=use_kernels, chunk_images=4).per_image
    for run in (g, p):
        np.testing.assert_array_equal(run["entropy_global"], g["entropy"])
        np.testing.assert_array_equal(run["entropy_per_layer"], p["entropy"])
    ref = reference(blocks)["entropy"]  # the authors' per-token loop on the global range
    np.testing.assert_allclose(g["entropy"].mean(1), ref, rtol=1e-12)
    per_layer = np.array([reference(blocks[i:i + 1])["entropy"][0] for i in range(3)])  # one layer: its own range
    np.testing.assert_allclose(p["entropy"].mean(1), per_layer, rtol=1e-12)
    glob, own = g["entropy"].mean(1), p["entropy"].mean(1)
    assert glob[1] == pytest.approx(own[1], abs=0.5)  # the 100x layer sets the global range
    assert (own[[0, 2]] - glob[[0, 2]] > 1.5).all()


def tokens_near_edges(lo, hi, bins=100, C=48, seed=0):
    """Tokens mixing values on the float32 edges, one ulp either side, random values and values outside."""
    edges = histogram_edges(lo, hi, bins).numpy()
    rng = np.random.default_rng(seed)
    pool = np.concatenate([edges, np.nextafter(edges, np.float32(-np.inf)), np.nextafter(edges, np.float32(np.inf)),
                           rng.uniform(lo, hi, 200).astype(np.float32), np.float32([lo - 1, hi + 1])])
    return rng.choice(pool, size=(64, C)).astype(np.float32), edges


@pytest.mark.parametrize("lo, hi", [(-3.0, 5.0), (0.1, 0.2), (1000.0, 1000.5), (-7e-4, 3e-4), (-1e-3, 50.0),
                                    (2.5, 2.75)])
@pytest.mark.parametrize("path", ["c", "torch"])
def test_binning_matches_np_histogram_at_edges(lo, hi, path):
    tokens, edges = tokens_near_edges(lo, hi)
    if path == "c":
        from distdyn import kernels

        lib = kernels.load()
        if lib is None:
            pytest.skip("no C compiler")
        got, _ = kernels.token_entropy(lib, tokens, edges, metrics._nlog2n(tokens.shape[1]).numpy())
    else:
        got = token_entropy(torch.from_numpy(tokens), torch.from_numpy(edges)).numpy()
    np.testing.assert_allclose(got, numpy_entropy(tokens, lo, hi), rtol=1e-12, atol=1e-12)


def test_recorded_range_gives_the_same_numbers_as_a_first_pass(tmp_path):
    from distdyn.dumps import ValueRange

    rng = np.random.default_rng(4)
    blocks = rng.standard_t(3, size=(3, 6, 4, 8)).astype(np.float32)
    path = write_fake_dump(tmp_path / "d.h5", blocks)
    first_pass = compute_dump(path)
    recorded = ValueRange(3)
    recorded.update(blocks)
    with h5py.File(path, "a") as f:
        recorded.write(f)
    np.testing.assert_array_equal(recorded.lo, blocks.min(axis=(1, 2, 3)))
    again = compute_dump(path)
    for key in metrics.SCALAR_METRICS:
        np.testing.assert_array_equal(again.per_image[key], first_pass.per_image[key])
    np.testing.assert_array_equal(again.channel_abs, first_pass.channel_abs)


def test_bootstrap_interval_contains_the_estimate():
    values = np.random.default_rng(0).normal(size=(5, 50))
    lo, hi = bootstrap_ci(values, 300)
    est = values.mean(1)
    assert (lo <= est).all() and (est <= hi).all() and (hi - lo > 0).all()


def test_tables_have_documented_columns(tmp_path):
    rng = np.random.default_rng(3)
    blocks = rng.normal(size=(2, 6, 4, 8)).astype(np.float32)
    paths = [write_fake_dump(tmp_path / f"{n}.h5", blocks, model=f"logit/seed_0/{n}", role="student",
                             setting="logit", epoch=e, checkpoint=n) for n, e in (("epoch_2", 2), ("final", 4))]
    layers, spectra = metrics.compute_tables([str(p) for p in paths], bootstrap=10)
    assert list(layers.columns) == LAYER_COLUMNS
    assert list(spectra.columns) == SPECTRA_COLUMNS
    assert len(layers) == 2 * 2 * len(metrics.LAYER_METRICS)
    assert set(layers.metric) == set(metrics.LAYER_METRICS)
    assert sorted(layers.layer.unique()) == [1, 2]
    assert len(spectra) == 2 * 2 * 4 and spectra.freq.max() < 0.5
    wide = entropy_wide(layers)
    assert list(wide.columns) == ["checkpoint", "Layer_1", "Layer_2"]
    assert wide.checkpoint.tolist() == ["epoch_2", "final"]


def test_accuracy_tables(tmp_path):
    import json

    def log(path, accs):
        path.write_text("".join(json.dumps({"epoch": i + 1, "test_acc1": a, "test_acc5": 99.0, "train_loss_feat": 0.1})
                                + "\n" for i, a in enumerate(accs)))
        return str(path)

    logs = [log(tmp_path / "t.jsonl", [90, 95]), log(tmp_path / "a.jsonl", [50, 70, 60]),
            log(tmp_path / "b.jsonl", [55, 65, 64]), log(tmp_path / "c.jsonl", [40, 50, 58])]
    acc = metrics.accuracy_table(logs, ["teacher", "logit", "logit", "spectral_last"], [0, 0, 1, 0],
                                 ["teacher", "student", "student", "student"])
    row = acc[(acc.setting == "logit") & (acc.seed == 0)].iloc[0]
    assert (row.final_acc1, row.best_acc1, row.best_epoch) == (60, 70, 2)
    summary = metrics.accuracy_summary(acc).set_index("setting")
    assert summary.loc["logit", "final_acc1_mean"] == 62
    assert summary.loc["logit", "final_acc1_std"] == pytest.approx(np.std([60, 64], ddof=1))
    assert summary.loc["spectral_last", "delta_vs_logit"] == -4
    assert "teacher" not in summary.index


def test_float16_dump_reads_as_its_float32_values(tmp_path):
    blocks = np.random.default_rng(5).normal(size=(2, 5, 4, 3)).astype(np.float16)
    path = write_fake_dump(tmp_path / "d.h5", blocks)
    buf = np.empty((3, 4, 3), dtype=np.float32)
    with h5py.File(path, "r") as f:
        np.testing.assert_array_equal(metrics.read_chunk(f["blocks"], 1, 2, 5, buf), blocks[1, 2:5].astype(np.float32))
    ref = compute_in_memory(blocks.astype(np.float32))
    np.testing.assert_allclose(compute_dump(path, chunk_images=3).per_image["entropy"].mean(1), ref["entropy"],
                               rtol=1e-12)


@pytest.mark.parametrize("gpus, present, device", [(0, True, "cpu"), (1, True, "cuda"), (1, False, "cpu"),
                                                   (0, False, "cpu")])
def test_metric_job_gives_the_engine_a_gpu_only_when_granted_and_present(gpus, present, device, monkeypatch, tmp_path,
                                                                        capsys):
    """`python -m distdyn.metrics --gpu N` (the compute rules): the device it hands the engine, from
    jobenv.granted_device. The engine on a real GPU: test_cuda_engine_matches_the_c_kernels."""
    from distdyn.jobenv import granted_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: present)
    assert granted_device(gpus) == device
    given = []

    def on_the_cpu(dumps, **kw):  # records the device, then computes on the CPU (this machine may have no GPU)
        given.append(kw["device"])
        return real(dumps, **{**kw, "device": "cpu"})

    real = metrics.compute_tables
    monkeypatch.setattr(metrics, "compute_tables", on_the_cpu)
    dump = write_fake_dump(tmp_path / "d.h5", np.random.default_rng(0).normal(size=(2, 3, 4, 8)).astype(np.float32))
    assert metrics.main([str(dump), "--out", str(tmp_path / "out"), "--gpu", str(gpus), "--bootstrap", "0"]) == 0
    assert given == [device] and f"metric engine on {device}" in capsys.readouterr().err
    assert (tmp_path / "out" / "layers.csv").is_file()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_engine_matches_the_c_kernels(tmp_path):
    if kernels.load() is None:
        pytest.skip("no C kernels (no C compiler) to compare with")
    rng = np.random.default_rng(5)
    blocks = rng.standard_t(3, size=(3, 9, 16, 24)).astype(np.float32)
    path = write_fake_dump(tmp_path / "d.h5", blocks)
    on_gpu = compute_dump(path, chunk_images=4, device="cuda")
    on_cpu = compute_dump(path, chunk_images=4)
    np.testing.assert_allclose(on_gpu.spectra, on_cpu.spectra, rtol=1e-6)
    for key in metrics.SCALAR_METRICS:
        np.testing.assert_allclose(on_gpu.per_image[key], on_cpu.per_image[key], rtol=1e-6, err_msg=key)
    np.testing.assert_allclose(on_gpu.channel_abs, on_cpu.channel_abs, rtol=1e-6)
