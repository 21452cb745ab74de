"""MPTQ-ViT: mixed-precision post-training quantization for vision transformers (Tai and Wu, 2024), single-precision
part: SQ-b and OPT-m on two-region (twin-uniform) quantizers. Greedy MP, the paper's mixed-precision search, lives
with the cost model's searches (quant.search) and uses these quantizers.

- SQ-b, SmoothQuant with a bias term. For a LayerNorm output Y read by a Linear (qkv, fc1, Swin's patch merging):
      Y W^T + b = ((Y - mu) / eps) (W diag(eps))^T + (b + W mu)
  with the per-channel centre mu_j = (max_j + min_j) / 2 and the SmoothQuant factor
      eps_j = max|Y - mu|_j^alpha / max|W_:,j|^(1 - alpha),   alpha = 0.5
  folded into the LayerNorm (gamma / eps, (beta - mu) / eps) and the Linear (W diag(eps), b + W mu;
  quant.graph.norm_linear.fold_channel_affine), so the float model is unchanged and the quantizer sees channels that
  are centred and of comparable range. ``pot_smoothing`` rounds eps to a power of two (the PoT flow's form, where
  the fold must stay exact under shift-only scales).
- Two-region quantizers for post-softmax and post-GELU values with the region ratio 2^m (the authors' TSPTQ-ViT
  V-2SF; hwsim.kernels.twin executes them: the softmax unit's twin mode, the sign-region twin requantization, the
  PE's product shift by m or 0).
- OPT-m: m is chosen from data, per layer, by output error on calibration data. Post-softmax: m in 1 .. 16 - b by
  the error of attn @ V (per block, one op attribute). Post-GELU: after the scale search, m in 1 .. 16 - b jointly
  with the coarse step (15 steps from 0.5x to 1.2x the searched one) by fc2's output error weighted by the squared
  task-loss gradients; so m trades the negative region's clipping against its resolution instead of following the
  coverage rule PTQ4ViT uses.
- Our reading fills a gap the paper leaves: the uniform quantizers' scales (weights per output channel, GEMM inputs
  per tensor, MatMul operands per head) come from PTQ4ViT's Hessian-guided search (quant.methods.ptq4vit), on which
  the two-region quantizers build; mu is (max + min) / 2 (the paper allows the mean as well).
- Scales are floats, requantization dyadic multiply-shift. Calibration: 32 images, as PTQ4ViT. Nothing was tuned:
  alpha = 0.5 is SmoothQuant's default.
- Measured (bench/mptq_ablation.py --limit 2000, fake-quant = integer top-1, fp32 91.85 %): W4A4 PTQ4ViT's
  quantizers 89.95 %, + OPT-m 89.35 %, + SQ-b 90.20 %, both 90.25 %; W3A3 83.55 / 82.80 / 84.30 / 84.40 %. SQ-b
  carries the gain; OPT-m alone loses 0.6-0.75 pt (its 32-image fc2 error prefers wide ratios that clip GELU's
  negative tail) and adds 0.05-0.1 pt on top of SQ-b.
"""
from __future__ import annotations

import torch

from quant.graph.capture import Captured
from quant.graph.norm_linear import channel_ranges, fold_channel_affine, norm_linear_pairs
from quant.fakequant import twin_quant
from quant.layer_records import LinearRecord
from quant.methods.ptq4vit import PTQ4ViT, _weighted_error, max_twin_m
from quant.parts import fake_quant

SMOOTH_ALPHA = 0.5
COARSE_RATIOS = torch.linspace(0.5, 1.2, 15, dtype=torch.float64)  # OPT-m's coarse steps around the searched one


def sqb_factors(lo: torch.Tensor, hi: torch.Tensor, weight: torch.Tensor, alpha: float = SMOOTH_ALPHA,
                pot: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """(mu, eps) per input channel of a Linear reading channels with ranges [lo, hi] (SQ-b, module docstring)."""
    mu = (hi + lo) / 2
    spread = ((hi - lo) / 2).clamp(min=1e-8)
    w_max = weight.double().abs().amax(0).clamp(min=1e-8)
    eps = spread ** alpha / w_max ** (1 - alpha)
    if pot:
        eps = torch.exp2(torch.round(torch.log2(eps)))
    return mu, eps


class MPTQViT(PTQ4ViT):
    name = "mptq"

    def __init__(self, alpha: float = SMOOTH_ALPHA, pot_smoothing: bool = False, sq_b: bool = True,
                 opt_m: bool = True) -> None:
        """``sq_b=False`` / ``opt_m=False`` turn either part off, for ablations (bench/mptq_ablation.py)."""
        self.alpha, self.pot_smoothing, self.sq_b, self.opt_m = alpha, pot_smoothing, sq_b, opt_m

    @torch.no_grad()
    def prepare(self, captured: Captured, calib: torch.Tensor) -> None:
        """SQ-b on every LayerNorm -> Linear pair."""
        if not self.sq_b:
            return
        pairs = norm_linear_pairs(captured)
        ranges = channel_ranges(captured, [p.norm for p in pairs], calib)
        for pair in pairs:
            weight = captured.gm.get_submodule(pair.linear).weight
            mu, eps = sqb_factors(ranges[pair.norm].lo, ranges[pair.norm].hi, weight, self.alpha, self.pot_smoothing)
            fold_channel_affine(captured, pair, eps, -mu / eps)   # X' = X / eps - mu / eps

    def _search_linear(self, g, rec: LinearRecord) -> None:
        super()._search_linear(g, rec)
        site = g.inputs[0]
        if self.opt_m and site.role == "skewed":
            self._opt_m_gelu(g, rec)

    def _opt_m_gelu(self, g, rec: LinearRecord) -> None:
        """OPT-m at a post-GELU site: (m, coarse step) of least gradient-weighted fc2 output error."""
        site, wq = g.inputs[0], g.module.wq
        w_hat = fake_quant(g.module.weight.detach().double(), wq.scale[:, None], wq.bits, True)
        bias = 0 if g.module.bias is None else g.module.bias.detach().double()
        coarse = site.scale * 2.0 ** site.twin_m
        best = (float("inf"), site.scale, site.twin_m)
        for m in range(1, max_twin_m(site.bits) + 1):
            for fine in COARSE_RATIOS * coarse / 2.0 ** m:
                xq = twin_quant(rec.x, fine, site.bits, m, True)
                err = float(_weighted_error(xq @ w_hat.t() + bias, rec.out, rec.grad2).sum())
                if err < best[0]:
                    best = (err, fine, m)
        site.set_format(best[1].reshape(()), zero_point=0, signed=True)
        site.twin_m = best[2]
