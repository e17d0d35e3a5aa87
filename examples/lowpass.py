"""A distillation method of your own: SpectralKD on the low spatial frequencies only (docs/methods.md)."""
import torch
import torch.nn.functional as F

from distdyn.methods import Param
from distdyn.methods.base import PairwiseMethod, pool_channels


class LowPassSpectral(PairwiseMethod):
    """MSE of the ortho rfft2 spectra at frequencies up to `cutoff` only, teacher pooled to the student's width."""

    params = {"cutoff": Param(float, 0.25, "highest frequency kept, in cycles per token (0 to 0.5)",
                              minimum=0.0, maximum=0.5)}
    narrow_student = True  # pool_channels averages teacher channels down to the student's width

    def pair_loss(self, i, fs, ft):
        ft = pool_channels(ft, fs.shape[1])
        h, w = fs.shape[-2:]
        fy = torch.fft.fftfreq(h, device=fs.device).abs()[:, None]  # rows: both signs
        fx = torch.fft.rfftfreq(w, device=fs.device)[None, :]  # columns: the rfft half
        low = (fy <= self.cutoff) & (fx <= self.cutoff)
        spec_s = torch.fft.rfft2(fs.float(), norm="ortho")[..., low]
        spec_t = torch.fft.rfft2(ft.float(), norm="ortho")[..., low]
        return F.mse_loss(torch.view_as_real(spec_s), torch.view_as_real(spec_t))
