import numpy as np
import pytest
import torch

from distdyn.config import validate_schema
from distdyn.data import DataError, balanced_subset, describe, load_tensor_splits, probe_indices, tensor_batches
from helpers import fake_cifar10, fake_fashion, fake_imagefolder


def data_cfg(**kw):
    cfg = validate_schema({"data": kw})["data"]
    return cfg


def test_digits_split_sizes_and_stratification():
    tr, va, k = load_tensor_splits(data_cfg(source="digits"))
    assert k == 10
    assert len(tr) + len(va) == 1797
    assert len(va) == 360
    assert tr.images.shape[1:] == (1, 8, 8)
    counts = np.bincount(va.labels.numpy(), minlength=10)
    assert counts.min() >= 35 and counts.max() <= 37  # stratified
    assert abs(tr.images.mean().item()) < 1e-4  # normalised by train statistics


def test_digits_split_is_fixed():
    a = load_tensor_splits(data_cfg(source="digits"))[1]
    b = load_tensor_splits(data_cfg(source="digits", img_size=8))[1]
    assert torch.equal(a.labels, b.labels)


def test_upsampling_and_rgb():
    tr, va, _ = load_tensor_splits(data_cfg(source="digits", img_size=16, grayscale="rgb"))
    assert tr.images.shape[1:] == (3, 16, 16)
    assert describe(data_cfg(source="digits", img_size=16, grayscale="rgb")).in_chans == 3


def test_fashion_mnist_idx_reader(tmp_path):
    fake_fashion(tmp_path, train=40, test=20, gz=True)
    tr, va, k = load_tensor_splits(data_cfg(source="fashion_mnist", root=str(tmp_path)))
    assert (len(tr), len(va), k) == (40, 20, 10)
    assert tr.images.shape[1:] == (1, 28, 28)
    assert va.labels.tolist() == [i % 10 for i in range(20)]


def test_fashion_mnist_missing_file_names_key(tmp_path):
    with pytest.raises(DataError, match="data.root"):
        load_tensor_splits(data_cfg(source="fashion_mnist", root=str(tmp_path)))


def test_cifar10_pickle_reader(tmp_path):
    fake_cifar10(tmp_path, per_batch=6, test=8)
    tr, va, k = load_tensor_splits(data_cfg(source="cifar10", root=str(tmp_path)))
    assert (len(tr), len(va), k) == (30, 8, 10)
    assert tr.images.shape[1:] == (3, 32, 32)


def test_imagefolder_describe(tmp_path):
    from PIL import Image

    for part, n in (("train", 3), ("val", 2)):
        for cls in ("a", "b"):
            d = tmp_path / part / cls
            d.mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (40, 40), (i * 40, 0, 0)).save(d / f"{i}.png")
    info = describe(data_cfg(source="imagefolder", root=str(tmp_path), img_size=32))
    assert (info.num_classes, info.train_size, info.val_size, info.in_chans) == (2, 6, 4, 3)


def test_imagefolder_subsets_are_fixed_seeded_and_class_balanced(tmp_path):
    """data.train_subset / val_subset cut an ImageFolder as they cut the in-memory sources: a class-balanced
    choice seeded by split_seed, in file order, the same on every read; describe() gives the sizes that the
    training batches and the evaluation then have."""
    from distdyn.batches import Batches
    from distdyn.data import image_folder
    from distdyn.runtime import Runtime

    root = fake_imagefolder(tmp_path, classes=("a", "b", "c"), per_class=(6, 4), size=(40, 36))
    cfg = data_cfg(source="imagefolder", root=str(root), img_size=16, train_subset=7, val_subset=5)
    info = describe(cfg)
    assert (info.train_size, info.val_size) == (7, 5)
    train, val = image_folder(cfg, True, 16), image_folder(cfg, False, 16)
    assert (len(train), len(val)) == (7, 5) and len(train.classes) == 3
    assert np.bincount(train.targets).tolist() == [3, 2, 2] and np.bincount(val.targets).tolist() == [2, 2, 1]
    assert [s for s in train.samples] == sorted(train.samples)  # file order kept
    full = image_folder({**cfg, "train_subset": None}, True, 16)
    want = balanced_subset(np.asarray(full.targets), 7, cfg["split_seed"])
    assert train.samples == [full.samples[i] for i in want]  # the in-memory sources' choice
    assert image_folder(cfg, True, 16).samples == train.samples  # fixed
    assert image_folder({**cfg, "split_seed": 1}, True, 16).samples != train.samples  # seeded
    train_cfg = {"batch_size": 7, "eval_batch_size": 2}
    batches = Batches(cfg, train_cfg, Runtime(torch.device("cpu")))
    assert sum(len(y) for _, y in batches.train(torch.Generator().manual_seed(0), 1)) == info.train_size
    assert sum(len(y) for _, y in batches.val()) == info.val_size
    big = data_cfg(source="imagefolder", root=str(root), img_size=16, train_subset=100, val_subset=100)
    assert (describe(big).train_size, len(image_folder(big, False, 16))) == (18, 12)  # at most the whole split


def test_synthetic_shapes_and_labels():
    cfg = data_cfg(source="synthetic", synthetic={"num_classes": 3, "size": 90, "channels": 2, "img_size": 6})
    tr, va, k = load_tensor_splits(cfg)
    assert k == 3 and len(tr) + len(va) == 90
    assert tr.images.shape[1:] == (2, 6, 6)
    assert set(tr.labels.tolist()) == {0, 1, 2}


def test_balanced_subset_and_probe():
    labels = np.repeat(np.arange(5), 20)
    idx = balanced_subset(labels, 23, seed=3)
    counts = np.bincount(labels[idx], minlength=5)
    assert counts.tolist() == [5, 5, 5, 4, 4]
    assert np.array_equal(idx, np.sort(idx))
    assert np.array_equal(idx, probe_indices(labels, 23, 3))  # chosen by seed, reproducible
    assert not np.array_equal(idx, probe_indices(labels, 23, 4))
    assert probe_indices(labels, 7, 0, mode="authors").tolist() == list(range(7))


def test_balanced_subset_with_a_small_class():
    labels = np.array([0] * 2 + [1] * 10 + [2] * 10)
    counts = np.bincount(labels[balanced_subset(labels, 12, 0)])
    assert counts.tolist() == [2, 5, 5]


def test_batches_cover_the_split_once_per_epoch():
    tr, _, _ = load_tensor_splits(data_cfg(source="digits"))
    g = torch.Generator().manual_seed(0)
    seen = torch.cat([y for _, y in tensor_batches(tr, 100, shuffle=True, gen=g)])
    assert sorted(seen.tolist()) == sorted(tr.labels.tolist())


def test_augmentation_shapes_and_determinism():
    tr, _, _ = load_tensor_splits(data_cfg(source="digits"))
    aug = {"crop_padding": 2, "hflip": True}
    a = [x for x, _ in tensor_batches(tr, 64, shuffle=True, gen=torch.Generator().manual_seed(1), aug=aug)]
    b = [x for x, _ in tensor_batches(tr, 64, shuffle=True, gen=torch.Generator().manual_seed(1), aug=aug)]
    assert a[0].shape == (64, 1, 8, 8)
    assert all(torch.equal(x, y) for x, y in zip(a, b))
