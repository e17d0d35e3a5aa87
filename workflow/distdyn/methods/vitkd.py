"""vitkd: ViTKD (Yang et al. 2022, arXiv 2209.02432; reference code yzd-v/cls_KD), adapted to any block pairs.

ViTKD's guidelines: the shallow layers are *mimicked* (a per-layer linear map of the student's tokens to
the teacher's width, then MSE), and the deep layer is *generated* (the student's deep tokens, mapped to
the teacher's width, with a random share of them replaced by a learned mask token, go through a small
convolutional generator on the token grid, whose output at the masked positions must match the teacher's
deep feature). Its weights are the reference's defaults: alpha 3e-5 (mimicking) and beta 3e-6
(generation) on summed squared errors per image, mask ratio 0.5.

The reference mimics blocks 0 and 1 and generates the last block's output after the final norm; here
the setting's pairs say which blocks, with the paper's features (block outputs before the final norm):
the pair with the deepest student block generates, every other pair mimics.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import Param, register_method
from .base import Method, tokens


def random_masking(x: torch.Tensor, ratio: float, generator: torch.Generator | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-sample random masking by argsort of uniform noise (one torch.rand draw of [B, N]), as MAE and
    ViTKD: (the kept tokens [B, keep, D], the permutation that restores the order [B, N], the mask [B, N]:
    1 where a token was masked)."""
    b, n, d = x.shape
    keep = int(n * (1 - ratio))
    noise = torch.rand(b, n, generator=generator, device=x.device)
    shuffle = noise.argsort(dim=1)  # ascending: small noise is kept
    restore = shuffle.argsort(dim=1)
    kept = x.gather(1, shuffle[:, :keep, None].expand(-1, -1, d))
    mask = (restore >= keep).to(x.dtype)  # a token is masked where its rank in the shuffle is past `keep`
    return kept, restore, mask


@register_method
class ViTKD(Method):
    """ViTKD: MSE mimicry of the shallow pairs (linear maps), masked generation of the deepest pair."""

    name = "vitkd"
    params = {
        "alpha_vitkd": Param(float, 3e-5, "weight of the mimicking term (summed squared error per image)", minimum=0),
        "beta_vitkd": Param(float, 3e-6, "weight of the generation term (summed squared error per image, "
                                         "divided by the mask ratio)", minimum=0),
        "mask_ratio": Param(float, 0.5, "share of the deep layer's tokens masked (the reference's lambda_vitkd)",
                            minimum=0, maximum=1, exclusive=True),
    }
    roles = ("mimic", "generate")
    parts = ("mimic_align", "gen_align", "mask_token", "generator")
    feature_weight = 1.0  # alpha_vitkd and beta_vitkd are its weights

    @classmethod
    def pair_roles(cls, pairs) -> list[str]:
        deepest = max(int(s) for s, _ in pairs)
        return ["generate" if int(s) == deepest else "mimic" for s, _ in pairs]

    @classmethod
    def check_pairs(cls, pairs) -> str | None:
        if cls.pair_roles(pairs).count("generate") > 1:
            return "vitkd generates one deep layer: give exactly one pair with the deepest student block"
        return None

    def __init__(self, pairs, widths, alpha_vitkd: float, beta_vitkd: float, mask_ratio: float):
        super().__init__(pairs, widths, alpha_vitkd=alpha_vitkd, beta_vitkd=beta_vitkd, mask_ratio=mask_ratio)
        c_s, c_t = widths
        roles = self.pair_roles(self.pairs)
        self.mimic = [p for p, r in zip(self.pairs, roles) if r == "mimic"]
        self.deep = self.pairs[roles.index("generate")]
        # Built in the reference's order (its parameters' random draws): the maps, mask token, generator.
        self.mimic_align = nn.ModuleList(nn.Linear(c_s, c_t) for _ in self.mimic) if c_s != c_t else None
        self.gen_align = nn.Linear(c_s, c_t) if c_s != c_t else None
        self.mask_token = nn.Parameter(torch.zeros(1, 1, c_t))
        self.generator = nn.Sequential(nn.Conv2d(c_t, c_t, kernel_size=3, padding=1), nn.ReLU(inplace=True),
                                       nn.Conv2d(c_t, c_t, kernel_size=3, padding=1))
        # The masks come from a stream of their own (seeded here, from the stream the loss is built in), so
        # that the student's own stream (dropout, drop-path) stays that of every other setting of its seed;
        # the step's mask is drawn from mask_seed + mask_draws, which the resume state keeps (extra state).
        self.mask_seed = int(torch.randint(0, 2 ** 62, ()).item())
        self.mask_draws = 0

    def get_extra_state(self) -> dict:
        return {"mask_seed": self.mask_seed, "mask_draws": self.mask_draws}

    def set_extra_state(self, state: dict) -> None:
        self.mask_seed, self.mask_draws = int(state["mask_seed"]), int(state["mask_draws"])

    def mask_generator(self, device: torch.device) -> torch.Generator:
        """The generator of the next mask (one per step, so no generator state needs saving)."""
        g = torch.Generator(device=device)
        g.manual_seed(self.mask_seed + self.mask_draws)
        self.mask_draws += 1
        return g

    def forward(self, fs, ft):
        return self.mimic_loss(fs, ft) + self.generation_loss(fs, ft)

    def mimic_loss(self, fs, ft) -> torch.Tensor:
        """alpha * sum over the shallow pairs of the summed squared error per image."""
        total = 0.0
        for i, (s, t) in enumerate(self.mimic):
            xs = tokens(fs[s].float())
            if self.mimic_align is not None:
                xs = self.mimic_align[i](xs)
            total = total + F.mse_loss(xs, tokens(ft[t].float()), reduction="sum")
        return total / fs[self.deep[0]].shape[0] * self.alpha_vitkd

    def generation_loss(self, fs, ft) -> torch.Tensor:
        """beta / mask_ratio * the summed squared error per image of the generated deep tokens at the masked places."""
        s, t = self.deep
        x = tokens(fs[s].float())
        if self.gen_align is not None:
            x = self.gen_align(x)
        b, n, d = x.shape
        h, w = fs[s].shape[-2:]
        kept, restore, mask = random_masking(x, self.mask_ratio, self.mask_generator(x.device))
        x = torch.cat([kept, self.mask_token.expand(b, n - kept.shape[1], d)], dim=1)
        x = x.gather(1, restore[..., None].expand(-1, -1, d))
        x = self.generator(x.transpose(1, 2).reshape(b, d, h, w)).flatten(2).transpose(1, 2)
        mask = mask[..., None]
        loss = F.mse_loss(x * mask, tokens(ft[t].float()) * mask, reduction="sum")
        return loss / b * self.beta_vitkd / self.mask_ratio
