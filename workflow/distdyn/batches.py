"""Training and evaluation batches of a job: in-memory tensors or an ImageFolder, sharded across DDP ranks."""
from __future__ import annotations

import torch

from .data import SeededAugment, TensorSplit, image_folder, load_tensor_splits, tensor_batches
from .runtime import Runtime


class Batches:
    """Training and evaluation batches for in-memory or ImageFolder data, sharded across DDP ranks."""

    def __init__(self, data_cfg: dict, train_cfg: dict, rt: Runtime, img_size: int | None = None):
        self.cfg, self.train_cfg, self.rt = data_cfg, train_cfg, rt
        if train_cfg["batch_size"] % rt.world:
            raise ValueError(f"train.batch_size {train_cfg['batch_size']} is not divisible by {rt.world} processes")
        if data_cfg["source"] == "imagefolder":
            size = data_cfg["img_size"] or img_size or 224
            self.train_set = SeededAugment(image_folder(data_cfg, True, size))
            self.val_set = image_folder(data_cfg, False, size)
            self.num_classes, self.in_chans = len(self.train_set.classes), 3
        else:
            self.train_set, self.val_set, self.num_classes = load_tensor_splits(data_cfg)
            self.in_chans = self.train_set.images.shape[1]

    @property
    def in_memory(self) -> bool:
        return isinstance(self.train_set, TensorSplit)

    def train(self, gen: torch.Generator, epoch: int):
        bs = self.train_cfg["batch_size"]
        drop = len(self.train_set) > bs
        if self.in_memory:
            if self.rt.device.type == "cuda" and self.train_set.images.device != self.rt.device:
                # Small datasets live on the GPU: no loader stalls.
                self.train_set = TensorSplit(self.train_set.images.to(self.rt.device),
                                             self.train_set.labels.to(self.rt.device))
            yield from tensor_batches(self.train_set, bs, shuffle=True, gen=gen, aug=self.cfg["augment"],
                                      drop_last=drop, shard=(self.rt.rank, self.rt.world))
            return
        from torch.utils.data import DataLoader, DistributedSampler

        # One permutation per epoch, of which rank r takes every world-th index, and augmentation seeded
        # per image: a global batch holds the same images, augmented alike, for any number of processes.
        seed = int(torch.randint(0, 2**31, (1,), generator=gen))
        sampler = DistributedSampler(self.train_set, self.rt.world, self.rt.rank, shuffle=True, seed=seed,
                                     drop_last=True)
        sampler.set_epoch(epoch)
        self.train_set.epoch_seed = seed + epoch
        # The loader's own generator (its worker seeds): without one it would draw from torch's global RNG,
        # which is the model's (dropout) stream, and students sharing these batches each have their own.
        loader = DataLoader(self.train_set, batch_size=bs // self.rt.world, sampler=sampler, drop_last=drop,
                            num_workers=self.cfg["num_workers"], pin_memory=self.rt.device.type == "cuda",
                            generator=torch.Generator().manual_seed(seed + epoch))
        yield from loader

    def val_shard(self) -> range:
        """This rank's part of the validation split: a contiguous range (the first n % world ranks take one
        image more), so that the ranks' per-image results, gathered in rank order, are in the split's order."""
        n, rank, world = len(self.val_set), self.rt.rank, self.rt.world
        base, extra = divmod(n, world)
        start = rank * base + min(rank, extra)
        return range(start, start + base + (rank < extra))

    def val(self):
        """This rank's shard of the validation split in order (the whole split for one process)."""
        bs = self.train_cfg["eval_batch_size"]
        shard = self.val_shard()
        if self.in_memory:
            part = self.val_set
            if len(shard) != len(part):
                part = TensorSplit(part.images[shard.start:shard.stop], part.labels[shard.start:shard.stop])
            yield from tensor_batches(part, bs)
            return
        from torch.utils.data import DataLoader, Subset

        part = self.val_set if len(shard) == len(self.val_set) else Subset(self.val_set, shard)
        yield from DataLoader(part, batch_size=bs, shuffle=False, num_workers=self.cfg["num_workers"])
