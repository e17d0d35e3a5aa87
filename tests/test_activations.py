import h5py
import numpy as np
import pandas as pd
import pytest
import torch

from distdyn import activations
from distdyn.dumps import ATTRS, DATASETS, DumpError, open_dump
from distdyn.metrics import compute_dump
from helpers import train_teacher


@pytest.fixture
def teacher_dump(tiny_cfg, tmp_path):
    ckpt = train_teacher(tiny_cfg, tmp_path / "teacher", epochs=1)
    probe = tmp_path / "probe.csv"
    activations.write_probe(tiny_cfg["data"], tiny_cfg["probe"], probe)
    out = activations.dump(ckpt, tmp_path / "act" / "teacher.h5",
                           data_cfg=tiny_cfg["data"], probe_file=probe, chunk_images=5, batch_size=6,
                           meta={"model": "teacher", "role": "teacher", "setting": "teacher", "seed": 0})
    return out, probe, ckpt


def test_round_trip_with_all_datasets_and_attributes(teacher_dump, tiny_cfg):
    path, probe, ckpt = teacher_dump
    with open_dump(path) as f:
        assert set(DATASETS) <= set(f) and set(ATTRS) <= set(f.attrs)
        L, B, N, C = f["blocks"].shape
        assert (L, B, N, C) == (3, 16, 16, 16)
        assert f["blocks"].chunks == (1, 5, 16, 16)
        assert (f.attrs["grid_h"], f.attrs["grid_w"]) == (4, 4)
        assert f.attrs["role"] == "teacher" and f.attrs["epoch"] == 1
        assert list(f.attrs["layer_names"]) == ["blocks.0", "blocks.1", "blocks.2"]
        p = pd.read_csv(probe)
        np.testing.assert_array_equal(f["probe_indices"][:], p["index"])
        np.testing.assert_array_equal(f["labels"][:], p["label"])
        blocks, logits, grads = f["blocks"][:], f["logits"][:], f["grad_magnitude"][:]
    # Against a direct forward pass and autograd on one image.
    from distdyn.activations import val_split
    from distdyn.models import forward_with_blocks
    from distdyn.models import build_from_checkpoint
    from distdyn.models import load_checkpoint

    model = build_from_checkpoint(load_checkpoint(ckpt), "cpu")
    split = val_split(tiny_cfg["data"])
    i = int(p["index"][3])
    x = split.images[i:i + 1]
    held = []
    hooks = [b.register_forward_hook(lambda m, _, o: held.append(o)) for b in model.blocks]
    z, feats = forward_with_blocks(model, x, None)
    g = torch.autograd.grad(z[0, int(p["label"][3])], held)
    for h in hooks:
        h.remove()
    np.testing.assert_allclose(blocks[1, 3], feats[1][0].flatten(1).T.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits[3], z[0].detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(grads[:, 3], [t.abs().mean().item() for t in g], rtol=1e-4)


def test_float16_dump(teacher_dump, tiny_cfg, tmp_path):
    _, probe, ckpt = teacher_dump
    out = activations.dump(ckpt, tmp_path / "h.h5", data_cfg=tiny_cfg["data"], probe_file=probe, dtype="float16",
                           meta={"model": "teacher", "role": "teacher", "setting": "teacher", "seed": 0})
    with open_dump(out) as f:
        assert f["blocks"].dtype == np.float16
    assert compute_dump(out).num_layers == 3


def test_truncated_file_gives_clear_error(teacher_dump, tmp_path):
    path = teacher_dump[0]
    bad = tmp_path / "truncated.h5"
    data = path.read_bytes()
    bad.write_bytes(data[: len(data) // 3])
    with pytest.raises(DumpError, match="truncated.h5: not a readable HDF5 file"):
        compute_dump(bad)


def test_foreign_file_gives_clear_error(tmp_path):
    foreign = tmp_path / "foreign.h5"
    with h5py.File(foreign, "w") as f:
        f["data"] = np.zeros(3)
    with pytest.raises(DumpError, match="foreign.h5: not a complete distdyn activation dump .*blocks"):
        open_dump(foreign)


def test_no_temporary_files_left(teacher_dump):
    assert not list(teacher_dump[0].parent.glob("*.tmp"))
