import json
import os
import subprocess
import sys

import pytest
import torch

from distdyn.models import block_tokens, create_model, describe_model, forward_with_blocks
from helpers import TINY_VIT


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
    cait = {"model": "cait_s24_224", "overrides": {"img_size": 16, "patch_size": 4, "embed_dim": 32, "depth": 3,
                                                   "num_heads": 2}}
    model = create_model(cait, 10, 3).eval()
    _, feats = forward_with_blocks(model, torch.randn(1, 3, 16, 16), None)
    assert len(feats) == 3 and feats[0].shape == (1, 32, 4, 4)
    assert describe_model({"model": "deit_tiny_patch16_224", "overrides": {}}, 1000, 3) == (12, 192)


def _fetch(tmp_path, *args, env=None):
    cmd = [sys.executable, "-m", "distdyn.models", "fetch", "--name", "teacher", "--key", "teacher",
           "--model", json.dumps(TINY_VIT), "--num-classes", "4", "--in-chans", "1",
           "--out", str(tmp_path / "weights.pt"), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def test_pretrained_from_a_local_file_goes_through_timm_and_keeps_a_matching_head(tmp_path):
    from distdyn.models import fetch_pretrained, load_checkpoint

    model = create_model(TINY_VIT, 4, 1)
    torch.save(model.state_dict(), tmp_path / "mine.pth")
    weights = fetch_pretrained(TINY_VIT, str(tmp_path / "mine.pth"), 4, 1)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    # Another number of classes: timm's loader keeps the body and gives a new classifier.
    other = fetch_pretrained(TINY_VIT, str(tmp_path / "mine.pth"), 3, 1)
    assert other["head.weight"].shape == (3, 16)
    assert torch.equal(other["blocks.1.mlp.fc2.weight"], model.state_dict()["blocks.1.mlp.fc2.weight"])
    # The CLI writes a plain checkpoint that rebuilds without a config.
    proc = _fetch(tmp_path, "--pretrained", json.dumps(str(tmp_path / "mine.pth")))
    assert proc.returncode == 0, proc.stderr
    ckpt = load_checkpoint(tmp_path / "weights.pt")
    assert ckpt["arch"] == "vit_tiny_patch16_224" and ckpt["num_classes"] == 4 and ckpt["source"].startswith("timm:")
    assert all(torch.equal(ckpt["model"][k], v) for k, v in model.state_dict().items())


def test_pretrained_without_network_or_cache_is_one_line_naming_key_model_and_remedy(tmp_path):
    proc = _fetch(tmp_path, "--pretrained", "true", env={"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")})
    assert proc.returncode == 1
    lines = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in proc.stderr
    assert "teacher.pretrained" in lines[0] and "vit_tiny_patch16_224" in lines[0]
    assert "teacher.pretrained: /path/to/weights.pth" in lines[0]
    assert not (tmp_path / "weights.pt").exists()


def test_own_checkpoint_that_does_not_fit_names_the_key(tmp_path):
    torch.save({"model": {"head.weight": torch.zeros(2, 2)}}, tmp_path / "bad.pt")
    proc = _fetch(tmp_path, "--checkpoint", str(tmp_path / "bad.pt"))
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "teacher.checkpoint" in proc.stderr and "does not fit vit_tiny_patch16_224" in proc.stderr
