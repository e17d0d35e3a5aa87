import pytest
import torch
import torch.nn.functional as F

from distdyn.losses import DistillationLoss, needs_teacher, pool_channels, pooled_mse_loss, spectral_loss


def test_channel_pooling_equals_pairwise_means():
    ft = torch.randn(2, 8, 3, 3)
    pooled = pool_channels(ft, 4)
    expected = (ft[:, 0::2] + ft[:, 1::2]) / 2
    torch.testing.assert_close(pooled, expected)


def test_channel_pooling_groups_of_four():
    ft = torch.randn(2, 16, 2, 2)
    torch.testing.assert_close(pool_channels(ft, 4), ft.view(2, 4, 4, 2, 2).mean(2))


def test_pooling_is_noop_at_equal_width():
    ft = torch.randn(2, 4, 3, 3)
    assert pool_channels(ft, 4) is ft


def test_spectral_loss_matches_direct_computation():
    torch.manual_seed(0)
    fs, ft = torch.randn(3, 4, 5, 6), torch.randn(3, 8, 5, 6)
    pooled = ft.view(3, 4, 2, 5, 6).mean(2)
    # Direct: full ortho 2-D DFT via matrices, keep the rfft half (W//2 + 1 columns).
    H, W = 5, 6
    def dft(n):
        k = torch.arange(n)
        return torch.exp(-2j * torch.pi * torch.outer(k, k) / n) / n ** 0.5
    def spec(x):
        X = dft(H) @ x.to(torch.complex64) @ dft(W).T
        return torch.view_as_real(X[..., : W // 2 + 1])
    expected = ((spec(fs) - spec(pooled)) ** 2).mean()
    torch.testing.assert_close(spectral_loss(fs, ft), expected, rtol=1e-4, atol=1e-6)


def test_spectral_loss_relation_to_spatial_mse_for_white_maps():
    torch.manual_seed(0)
    fs, ft = torch.randn(64, 4, 14, 14), torch.randn(64, 4, 14, 14)
    ratio = spectral_loss(fs, ft) / F.mse_loss(fs, ft)
    assert 0.4375 <= ratio <= 0.875
    assert abs(ratio - 0.5) < 0.05


@pytest.mark.parametrize("loss", [spectral_loss, pooled_mse_loss])
def test_zero_loss_for_identical_features(loss):
    f = torch.randn(2, 4, 3, 3)
    assert loss(f, f).item() == pytest.approx(0.0, abs=1e-12)
    wide = f.repeat_interleave(2, dim=1)  # pooling pairs of equal channels gives f back
    assert loss(f, wide).item() == pytest.approx(0.0, abs=1e-10)


def _projector_step(trainable: bool):
    torch.manual_seed(0)
    crit = DistillationLoss("projector", [(0, 0)], alpha=0.9, tau=1.0, feature_weight=0.2, label_smoothing=0.1,
                            widths=(4, 8), projector_trainable=trainable)
    before = {k: v.clone() for k, v in crit.state_dict().items()}
    params = [p for p in crit.parameters() if p.requires_grad]
    fs = torch.randn(6, 4, 3, 3, requires_grad=True)
    opt = torch.optim.SGD(params + [fs], lr=0.5)
    terms = crit(torch.randn(6, 5, requires_grad=True), torch.randint(0, 5, (6,)), torch.randn(6, 5),
                 {0: fs}, {0: torch.randn(6, 8, 3, 3)})
    terms.total.backward()
    opt.step()
    moved = any(not torch.equal(before[k], v) for k, v in crit.state_dict().items())
    return params, moved, fs.grad


def test_frozen_projector_stays_frozen_but_passes_gradient():
    params, moved, grad = _projector_step(trainable=False)
    assert params == []
    assert not moved
    assert grad is not None and grad.abs().sum() > 0


def test_trained_projector_moves():
    params, moved, _ = _projector_step(trainable=True)
    assert len(params) == 6  # Linear weight+bias, two BN affine pairs
    assert moved


def test_total_objective_weights():
    torch.manual_seed(0)
    zs, zt, y = torch.randn(4, 5), torch.randn(4, 5), torch.randint(0, 5, (4,))
    fs, ft = {1: torch.randn(4, 2, 3, 3)}, {2: torch.randn(4, 4, 3, 3)}
    crit = DistillationLoss("spectral", [(1, 2)], alpha=0.9, tau=2.0, feature_weight=0.2, label_smoothing=0.1)
    t = crit(zs, y, zt, fs, ft)
    ce = F.cross_entropy(zs, y, label_smoothing=0.1)
    kl = F.kl_div(F.log_softmax(zs / 2, 1), F.log_softmax(zt / 2, 1), reduction="batchmean", log_target=True)
    torch.testing.assert_close(t.base, 0.1 * ce)
    torch.testing.assert_close(t.dist, 0.9 * 4.0 * kl)
    torch.testing.assert_close(t.feat, 0.2 * spectral_loss(fs[1], ft[2]))
    torch.testing.assert_close(t.total, t.base + t.dist + t.feat)


def test_method_none_is_plain_cross_entropy():
    zs, y = torch.randn(4, 5), torch.randint(0, 5, (4,))
    crit = DistillationLoss("none", [], alpha=0.9, tau=1.0, feature_weight=0.2, label_smoothing=0.1)
    t = crit(zs, y)
    torch.testing.assert_close(t.total, F.cross_entropy(zs, y, label_smoothing=0.1))
    assert not needs_teacher(crit.method) and needs_teacher("logit")
