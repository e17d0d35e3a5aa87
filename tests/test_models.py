import pytest
import torch

from distdyn.models import block_tokens, create_model, describe_model, forward_with_blocks


@pytest.mark.parametrize("depth,dim,patch,img", [(3, 16, 2, 8), (4, 24, 4, 16)])
def test_block_outputs_shapes(depth, dim, patch, img):
    cfg = {"model": "vit_tiny_patch16_224",
           "overrides": {"img_size": img, "patch_size": patch, "embed_dim": dim, "depth": depth, "num_heads": 2}}
    model = create_model(cfg, num_classes=5, in_chans=1).eval()
    logits, feats = forward_with_blocks(model, torch.randn(2, 1, img, img), None)
    grid = img // patch
    assert logits.shape == (2, 5)
    assert len(feats) == depth
    assert all(f.shape == (2, dim, grid, grid) for f in feats)
    assert describe_model(cfg, 5, 1) == (depth, dim)
    tokens = block_tokens(feats)
    assert tokens.shape == (depth, 2, grid * grid, dim)
    # Row-major grid order: token h*W + w is feature map position (h, w).
    assert torch.equal(tokens[0, 1, 1 * grid + 0], feats[0][1, :, 1, 0])


def test_block_outputs_are_raw_residual_stream_without_prefix():
    cfg = {"model": "vit_tiny_patch16_224",
           "overrides": {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 2, "num_heads": 2}}
    model = create_model(cfg, 3, 1).eval()
    held = []
    model.blocks[1].register_forward_hook(lambda m, i, o: held.append(o))
    _, feats = forward_with_blocks(model, torch.randn(2, 1, 8, 8), [1])
    raw = held[0][:, model.num_prefix_tokens:]  # [B, N, C] before the final norm
    assert torch.equal(block_tokens(feats)[0], raw)


def test_selected_indices_come_back_in_ascending_order():
    cfg = {"model": "vit_tiny_patch16_224",
           "overrides": {"img_size": 8, "patch_size": 2, "embed_dim": 16, "depth": 4, "num_heads": 2}}
    model = create_model(cfg, 3, 1).eval()
    x = torch.randn(1, 1, 8, 8)
    _, all_feats = forward_with_blocks(model, x, None)
    _, some = forward_with_blocks(model, x, [3, 0])
    assert torch.equal(some[0], all_feats[0]) and torch.equal(some[1], all_feats[3])


def test_cait_and_deit_build_with_overrides():
    cait = {"model": "cait_s24_224", "overrides": {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 3, "num_heads": 2}}
    model = create_model(cait, 10, 3).eval()
    _, feats = forward_with_blocks(model, torch.randn(1, 3, 16, 16), None)
    assert len(feats) == 3 and feats[0].shape == (1, 32, 4, 4)
    assert describe_model({"model": "deit_tiny_patch16_224", "overrides": {}}, 1000, 3) == (12, 192)
