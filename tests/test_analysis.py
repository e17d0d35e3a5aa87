import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from distdyn import analysis
from distdyn.analysis import (ENERGY_TAUS, SEP_LEVELS, cka_matrix, cka_rows, encoding_rows, encoding_width,
                              linear_cka, pca_basis, pca_dims, phases, sep_dims, sep_mean_curve, sep_moment,
                              sep_permutation_shifts, svd_dims)
from helpers import token_sep_curves
from distdyn.tables import CKA_COLUMNS, ENCODING_COLUMNS, LAYER_COLUMNS, PHASE_COLUMNS
from helpers import write_fake_dump


def random_orthogonal(d, gen):
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=gen, dtype=torch.float64))
    return q


def correlated_blocks(L, B, N, C, seed, base=None, offset=0.0):
    """[L, B, N, C] float32 blocks, optionally sharing a signal with `base` so CKA is not trivially ~0."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((L, B, N, C))
    if base is not None:
        mix = rng.standard_normal((base.shape[-1], C))
        shared = base.mean(0, keepdims=True)
        if shared.shape[2] != N:  # other token grid: share a per-image signal
            shared = shared.mean(2, keepdims=True)
        x = x + shared @ mix
    return (x + offset).astype(np.float32)


# ---------------------------------------------------------------- CKA


def test_cka_self_is_one():
    x = torch.randn(200, 12, dtype=torch.float64)
    assert linear_cka(x, x) == pytest.approx(1.0, abs=1e-12)


def test_cka_invariances():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(300, 10, generator=gen, dtype=torch.float64)
    y = x[:, :6] @ torch.randn(6, 8, generator=gen, dtype=torch.float64) + torch.randn(300, 8, generator=gen,
                                                                                           dtype=torch.float64)
    ref = linear_cka(x, y)
    assert 0.05 < ref < 0.95
    qx, qy = random_orthogonal(10, gen), random_orthogonal(8, gen)
    for a, b in [(x @ qx, y), (x, y @ qy), (x @ qx, y @ qy), (3.7 * x, y), (x, 0.01 * y), (-2 * x @ qx, 5 * y @ qy)]:
        assert linear_cka(a, b) == pytest.approx(ref, abs=1e-10)
    assert linear_cka(x, y) == pytest.approx(linear_cka(y, x), abs=1e-12)
    # Not invariant to a general invertible map: CKA is not CCA.
    assert abs(linear_cka(x @ torch.diag(torch.linspace(0.1, 10, 10, dtype=torch.float64)), y) - ref) > 1e-3


def test_cka_rejects_mismatched_examples():
    with pytest.raises(ValueError):
        linear_cka(torch.randn(5, 3), torch.randn(6, 3))


@pytest.mark.parametrize("chunk", [1, 3, 4, 64])
def test_cka_matrix_streaming_equals_in_memory(tmp_path, chunk):
    # A large common offset checks the algebraic centring in float64.
    t = correlated_blocks(3, 10, 4, 6, seed=1, offset=50.0)
    s = correlated_blocks(2, 10, 4, 5, seed=2, base=t)
    write_fake_dump(tmp_path / "s.h5", s, role="student", model="m/epoch_3", checkpoint="epoch_3")
    write_fake_dump(tmp_path / "t.h5", t)
    m = cka_matrix(tmp_path / "s.h5", tmp_path / "t.h5", chunk_images=chunk)
    assert m.shape == (2, 3)
    ref = np.array([[linear_cka(torch.from_numpy(s[i].reshape(-1, 5)), torch.from_numpy(t[j].reshape(-1, 6)))
                     for j in range(3)] for i in range(2)])
    np.testing.assert_allclose(m, ref, rtol=1e-9, atol=1e-12)
    assert ref.max() > 0.2  # the shared signal is seen


def test_cka_matrix_self_and_pooled(tmp_path):
    t = correlated_blocks(3, 9, 4, 6, seed=3)
    write_fake_dump(tmp_path / "t.h5", t)
    m = cka_matrix(tmp_path / "t.h5", tmp_path / "t.h5", chunk_images=2)
    np.testing.assert_allclose(np.diag(m), 1.0, atol=1e-12)
    # Different token counts: one mean-pooled token per image.
    s = correlated_blocks(2, 9, 9, 5, seed=4, base=t)
    write_fake_dump(tmp_path / "s.h5", s)
    m = cka_matrix(tmp_path / "s.h5", tmp_path / "t.h5", chunk_images=4)
    pooled_s, pooled_t = torch.from_numpy(s.astype(np.float64).mean(2)), torch.from_numpy(t.astype(np.float64).mean(2))
    ref = [[linear_cka(pooled_s[i], pooled_t[j]) for j in range(3)] for i in range(2)]
    np.testing.assert_allclose(m, ref, rtol=1e-9)


def test_cka_float16_dump(tmp_path):
    t = correlated_blocks(2, 6, 4, 8, seed=5).astype(np.float16)
    write_fake_dump(tmp_path / "t.h5", t)
    m = cka_matrix(tmp_path / "t.h5", tmp_path / "t.h5", chunk_images=4)
    ref = linear_cka(torch.from_numpy(t[0].reshape(-1, 8).astype(np.float64)),
                     torch.from_numpy(t[1].reshape(-1, 8).astype(np.float64)))
    assert m[0, 1] == pytest.approx(ref, rel=1e-9)


def test_cka_mismatched_probe_indices_raise(tmp_path):
    t = correlated_blocks(2, 6, 4, 5, seed=6)
    write_fake_dump(tmp_path / "student.h5", t)
    write_fake_dump(tmp_path / "teacher.h5", t)
    with h5py.File(tmp_path / "student.h5", "r+") as f:
        f["probe_indices"][0] = 99
    with pytest.raises(ValueError, match="student.h5.*teacher.h5"):
        cka_matrix(tmp_path / "student.h5", tmp_path / "teacher.h5")


def test_cka_rows(tmp_path):
    t = correlated_blocks(3, 6, 4, 6, seed=7)
    s = correlated_blocks(2, 6, 4, 5, seed=8, base=t)
    write_fake_dump(tmp_path / "s.h5", s, model="logit/seed_0/final", role="student", setting="logit", epoch=9)
    write_fake_dump(tmp_path / "t.h5", t)
    df = cka_rows(tmp_path / "s.h5", tmp_path / "t.h5")
    assert list(df.columns) == CKA_COLUMNS and len(df) == 6
    assert (df.model == "logit/seed_0/final").all() and (df.role == "student").all() and (df.epoch == 9).all()
    assert sorted(set(df.student_layer)) == [1, 2] and sorted(set(df.teacher_layer)) == [1, 2, 3]
    m = cka_matrix(tmp_path / "s.h5", tmp_path / "t.h5")
    assert df.set_index(["student_layer", "teacher_layer"]).cka[(2, 3)] == pytest.approx(m[1, 2])


# ---------------------------------------------------------------- phases


def layer_table(profiles, half_width=0.05):
    """Tidy entropy rows for {model: values}; half_width None gives NaN CIs."""
    rows = []
    for model, values in profiles.items():
        for layer, v in enumerate(values, 1):
            hw = np.nan if half_width is None else half_width
            rows.append({"model": model, "role": "student", "setting": model, "seed": 0, "epoch": 3,
                         "checkpoint": "final",
                         "layer": layer, "metric": "entropy", "value": v, "ci_low": v - hw, "ci_high": v + hw})
            rows.append({"model": model, "role": "student", "setting": model, "seed": 0, "epoch": 3,
                         "checkpoint": "final",
                         "layer": layer, "metric": "activation_magnitude", "value": -v, "ci_low": -v, "ci_high": -v})
    return pd.DataFrame(rows)[LAYER_COLUMNS]


def test_phases_u_and_monotone():
    df = phases(layer_table({"u": [2.4, 2.1, 1.8, 2.5, 3.3], "mono": [1.0, 1.5, 2.0, 2.5, 3.0],
                             "shallow": [2.0, 1.98, 2.5]}).sample(frac=1, random_state=0))
    assert list(df.columns) == PHASE_COLUMNS
    r = df.set_index("model")
    assert r.loc["u", "interior"] and r.loc["u", "u_shaped"]
    assert r.loc["u", "min_layer"] == 3 and r.loc["u", "num_layers"] == 5
    assert r.loc["u", "h_first"] == 2.4 and r.loc["u", "h_min"] == 1.8 and r.loc["u", "h_last"] == 3.3
    assert r.loc["u", "drop"] == pytest.approx(0.6) and r.loc["u", "rise"] == pytest.approx(1.5)
    assert not r.loc["mono", "interior"] and not r.loc["mono", "u_shaped"] and r.loc["mono", "min_layer"] == 1
    # An interior minimum inside the first layer's CI is not separated.
    assert r.loc["shallow", "interior"] and not r.loc["shallow", "u_shaped"]


def test_phases_nan_ci_not_separated():
    df = phases(layer_table({"u": [2.4, 1.8, 3.3]}, half_width=None))
    assert bool(df.interior.iloc[0]) and not bool(df.u_shaped.iloc[0])


# ---------------------------------------------------------------- encoding width


def low_rank_images(B, N, C, r, seed, shared=False):
    """[B, N, C] images of rank r; with shared=True all live in one r-dim channel subspace."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((C, r)))[0].T  # [r, C]
    out = []
    for _ in range(B):
        b = basis if shared else np.linalg.qr(rng.standard_normal((C, r)))[0].T
        out.append(rng.standard_normal((N, r)) * np.linspace(3, 1, r) @ b)
    return np.stack(out)


def test_svd_dims_of_rank_r():
    x = torch.from_numpy(low_rank_images(5, 20, 16, 3, seed=0))
    d = svd_dims(x)
    assert d.shape == (5, len(ENERGY_TAUS))
    assert (d[:, -1] == 3).all() and (d <= 3).all() and (d >= 1).all()
    assert torch.isnan(svd_dims(torch.zeros(1, 4, 3))).all()


def test_pca_dims_in_subspace():
    x = torch.from_numpy(low_rank_images(8, 20, 16, 4, seed=1, shared=True))
    t = x.reshape(-1, 16)
    basis = pca_basis(t.T @ t / len(t))
    d = pca_dims(x, basis)
    assert (d <= 4).all() and (d[:, -1] == 4).all()
    # Per-image ranks differ from the shared basis: per-image SVD never needs more.
    x = torch.from_numpy(low_rank_images(8, 20, 16, 2, seed=2))
    t = x.reshape(-1, 16)
    d_pca = pca_dims(x, pca_basis(t.T @ t / len(t)))
    assert (svd_dims(x) <= d_pca).all() and d_pca[:, -1].max() > 2


def test_sep_moment_equals_token_curves():
    x = torch.randn(30, 7, 12, dtype=torch.float64) + torch.linspace(-1, 1, 12, dtype=torch.float64)
    x[0, 0] = 0  # an all-zero token is skipped, not NaN
    keep = x.reshape(-1, 12).norm(dim=-1) > 0
    g, n = sep_moment(x)
    assert n == int(keep.sum())
    direct = token_sep_curves(x).reshape(-1, 12)[keep].mean(0)
    torch.testing.assert_close(sep_mean_curve(g / n), direct, rtol=0, atol=1e-10)
    perm = np.random.default_rng(0).permutation(12)
    direct = token_sep_curves(x[..., perm]).reshape(-1, 12)[keep].mean(0)
    torch.testing.assert_close(sep_mean_curve(g / n, perm), direct, rtol=0, atol=1e-10)


def test_sep_white_noise_is_diagonal():
    g, n = sep_moment(torch.randn(2000, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64))
    frac = sep_dims(g / n) / 64
    assert np.all(np.abs(frac - np.array(SEP_LEVELS)) < 0.03)
    shifts = sep_permutation_shifts(g / n, permutations=20, seed=1)
    assert shifts.shape == (20, len(SEP_LEVELS)) and np.all(np.abs(shifts.mean(0)) < 0.03)


def test_sep_permutation_shift_of_structured_tokens():
    # A permutation keeps each token's mean and norm, so constant tokens do not move at all.
    g, n = sep_moment(torch.ones(50, 32, dtype=torch.float64) * torch.randn(50, 1, dtype=torch.float64))
    assert sep_dims(g / n)[0] == 1 and np.all(sep_permutation_shifts(g / n, permutations=5) == 0)
    # x_c = 0.3 + a cos(2 pi c / D): 15 % of the energy at DC, 42 % in bin 1 (and bin D-1, at
    # the curve's far end), so the 50 % dim is 2; shuffling the channels spreads the
    # non-DC energy over all bins and moves it to ~14 of 32.
    c = torch.arange(32, dtype=torch.float64)
    a = 1 + 0.1 * torch.randn(400, 1, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    g, n = sep_moment(0.3 + a * torch.cos(2 * np.pi * c / 32))
    assert sep_dims(g / n)[0] == 2
    shifts = sep_permutation_shifts(g / n, permutations=10, seed=0)
    assert (shifts[:, 0] > 0.2).all()


def test_encoding_rows(tmp_path):
    rng = np.random.default_rng(0)
    blocks = np.stack([rng.standard_normal((12, 25, 16)),  # layer 1: white noise
                       low_rank_images(12, 25, 16, 3, seed=3, shared=True)]).astype(np.float32)
    write_fake_dump(tmp_path / "d.h5", blocks, model="spectral_last/seed_0/final", role="student", epoch=7)
    df = encoding_rows(tmp_path / "d.h5", permutations=30, seed=0, chunk_images=5)
    assert list(df.columns) == ENCODING_COLUMNS
    assert len(df) == 2 * len(ENERGY_TAUS) + 3 * len(SEP_LEVELS)
    assert (df.layer == 2).all() and (df.model == "spectral_last/seed_0/final").all() and (df.epoch == 7).all()
    v = df.set_index(["measure", "threshold"])
    assert v.loc[("svd_dim", 0.99), "value"] == pytest.approx(3.0)
    assert (v.loc["pca_dim", "value"] <= 3 + 1e-9).all()
    np.testing.assert_allclose(v.loc["sep_fraction", "value"].to_numpy(), v.loc["sep_dim", "value"].to_numpy() / 16)
    shift = v.loc["sep_perm_shift"]
    assert shift.ci_low.notna().all() and (shift.ci_low <= shift.value).all() and (shift.value <= shift.ci_high).all()
    assert v.drop(index="sep_perm_shift", level=0)[["ci_low", "ci_high"]].isna().all().all()
    # Same seed, same table; the chunking does not matter.
    again = encoding_rows(tmp_path / "d.h5", permutations=30, seed=0, chunk_images=64)
    pd.testing.assert_frame_equal(df, again, check_exact=False, rtol=1e-9)
    # First layer by index, and the per-image arrays behind the table.
    w = encoding_width(tmp_path / "d.h5", 0, permutations=0)
    assert w["layer"] == 1 and w["svd_dims"].shape == (12, len(ENERGY_TAUS)) and w["sep_shifts"].shape == (0, 5)
    assert encoding_rows(tmp_path / "d.h5", 0, permutations=0).query("measure == 'sep_perm_shift'").value.isna().all()


# ---------------------------------------------------------------- CLI


def test_cli(tmp_path):
    t = correlated_blocks(2, 6, 4, 6, seed=9)
    write_fake_dump(tmp_path / "t.h5", t)
    write_fake_dump(tmp_path / "s1.h5", correlated_blocks(2, 6, 4, 5, seed=10, base=t), model="a", role="student")
    write_fake_dump(tmp_path / "s2.h5", correlated_blocks(1, 6, 4, 5, seed=11, base=t), model="b", role="student")
    out = tmp_path / "out"
    assert analysis.main(["cka", "--student", str(tmp_path / "s1.h5"), str(tmp_path / "s2.h5"),
                          "--teacher", str(tmp_path / "t.h5"), "--out", str(out / "cka.csv")]) == 0
    cka = pd.read_csv(out / "cka.csv")
    assert list(cka.columns) == CKA_COLUMNS and len(cka) == 2 * 2 + 1 * 2 and set(cka.model) == {"a", "b"}
    layer_table({"u": [2.4, 1.8, 3.3]}).to_csv(tmp_path / "layers.csv", index=False)
    assert analysis.main(["phases", "--layers", str(tmp_path / "layers.csv"), "--out", str(out / "phases.csv")]) == 0
    ph = pd.read_csv(out / "phases.csv")
    assert list(ph.columns) == PHASE_COLUMNS and bool(ph.u_shaped.iloc[0])
    assert analysis.main(["encoding", str(tmp_path / "t.h5"), str(tmp_path / "s1.h5"), "--out", str(out / "enc.csv"),
                          "--permutations", "5"]) == 0
    enc = pd.read_csv(out / "enc.csv")
    assert list(enc.columns) == ENCODING_COLUMNS and set(enc.model) == {"teacher", "a"}
    assert not list(out.glob(".*tmp"))  # atomic writes leave no temp files
    assert analysis.main([]) == 2
