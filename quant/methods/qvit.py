"""Q-ViT: accurate and fully quantized low-bit vision transformer (Li, Xu, Zhang, Cao, Gao and Guo, NeurIPS 2022),
as quantization-aware training on vitsim's fake-quant graph (quant.qat runs the training loop).

- LSQ / LSQ+ (Esser et al., ICLR 2020; Bhalgat et al., CVPR-W 2020): every scale is trained through its log2 —
  weights one per output channel, activations one per tensor with a trainable zero point where the integer program
  can carry one (after a LayerNorm or a requantized accumulator, read by a Linear or a convolution), q, k and v one per
  head, and the attention probabilities one per head. With ``pot`` each scale is 2^round(e) (the exponent learnt
  through a straight-through estimator) for shift-only requantization. Adam normalises each parameter's step, so
  LSQ's gradient scale 1/sqrt(numel * Qp) (meant for SGD) is not applied.
- Initial scales: the least-error step of a min-max-relative candidate grid (weights by the layer's output error,
  activations by the consumer's), not LSQ's 2 mean|x| / sqrt(Qp): at 2-3 bits on a trained model that start sits far
  from the optimum and costs the first epochs.
- IRM, information rectification: the q and k features of each attention's qkv Linear pass through
  (y - mu + beta) / (gamma sqrt(sigma^2 + eps)) before their quantizers, learnable gamma > 0 and beta per feature.
  The paper's mu, sigma^2 are statistics of q and k; the released code normalises each token (a LayerNorm over the
  head dimension), which would leave a normalisation at run time. We take batch statistics while training and running
  averages after (as batch normalisation does), so the exported program folds the rectification into the qkv weights
  and bias: no float step is left. gamma and beta start at the calibration statistics' identity (gamma = 1/sigma,
  beta = mu), so training starts from the float model's function. With ``pot`` the per-feature gain is a power of two,
  so folding keeps the weight scales powers of two.
- DGD, distribution-guided distillation: per attention layer and head, the patch-similarity matrices G = q q^T and
  k k^T of the student's quantized q and k and of the float teacher's, each row normalised to unit l2 norm;
  L_DGD = mean over layers, heads and images of ||G_teacher - G_student||_F, plus the logit distillation
  KL(teacher || student). The paper states no weight between the two; ``DGD_WEIGHT`` = 1.
- Post-softmax: 16-bit uniform probabilities from the integer softmax, requantized per head (quant.sites).
The patch embedding and the classifier stay at 8 bits (the paper's practice, as for every vitsim method).
"""
from __future__ import annotations

import torch
import torch.fx as fx
import torch.nn.functional as F

from quant.fakequant import ActQuant, QuantLinear, round_ste
from quant.methods.base import Method
from quant.methods.p2vit import ptf_search
from quant.observers import Observer
from quant.parts import absmax_scale, fake_quant
from quant.quantizer import FLOAT_RATIOS, Quantizer, head_scales, pot_candidates
from quant.sites import QuantGraph, _source

DGD_WEIGHT = 1.0
IRM_EPS = 1e-5
LEARNED_ROLES = ("tensor", "ptf", "skewed", "head", "softmax")
# Producers after which a site's zero point lowers: a LayerNorm adds it, a requantized accumulator adds it.
ZERO_POINT_SOURCES = ("layernorm", "linear", "conv2d", "matmul", "gelu", "silu", "hardswish")
PROB_STEPS = 40  # per-head probability scale candidates: 2^(-b - i/4), i < 40 (PoT: every fourth)


class QViT(Method):
    """Scale initialisation for QAT (``pot``: power-of-two scales); quant.qat trains from it."""

    name = "qvit"
    softmax_log2_bits = None
    softmax_per_head = True   # quant.sites: 16-bit probabilities, then one scale per head
    calibration_images = 256

    def __init__(self, pot: bool = False, reparam_layernorm: bool = False, ptf: bool = False,
                 log2_softmax: bool = False) -> None:
        self.softmax_log2_bits = 4 if log2_softmax else None   # FQ-ViT's 4-bit log2 probabilities (shifts in attn.V)
        self.pot = pot
        self.form = "PoT" if pot else "Float"
        self.reparam_layernorm = reparam_layernorm
        self.ptf = ptf

    def prepare(self, captured, calib: torch.Tensor) -> None:
        """With ``reparam_layernorm``: RepQ-ViT's channel-wise to layer-wise fold of every post-LayerNorm activation
        (quant.methods.repq) before the scales start, so the one per-tensor scale a LayerNorm output gets (and then
        learns) sees channels of one range."""
        if self.reparam_layernorm:
            from quant.methods.repq import reparameterise_post_layernorm

            reparameterise_post_layernorm(captured, calib)

    def weight_scale(self, weight: torch.Tensor, inputs: torch.Tensor | None, bits: int) -> torch.Tensor:
        return Quantizer(f"Int{bits}WeightPerChannel{self.form}", "mse").fit(weight, inputs=inputs).scale

    def tensor_scale(self, obs: Observer, bits: int, signed: bool = True,
                     consumer: torch.Tensor | None = None) -> torch.Tensor:
        return Quantizer(f"{'' if signed else 'U'}Int{bits}ActPerTensor{self.form}", "mse").fit(
            obs, consumer=consumer).scale

    def zero_point_scale(self, obs: Observer, bits: int,
                         consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        q = Quantizer(f"ShiftedInt{bits}ActPerTensor{self.form}", "mse").fit(obs, consumer=consumer)
        return q.scale, int(q.zero_point)

    def ptf_format(self, obs: Observer, bits: int,
                   consumer: torch.Tensor | None = None) -> tuple[torch.Tensor, int]:
        """A LayerNorm output: per tensor with a zero point (the integer LayerNorm adds it); with ``ptf`` FQ-ViT's
        power-of-two factors per channel (2^k apart, k in 0..3, chosen by the consumer's output error), starting at
        zero point 0. LSQ then learns the layer-wise step and the zero point; the factors stay (ActQuant.learn_scale
        with ``shared``), so the consumer still shifts its input by k."""
        if not self.ptf:
            return self.zero_point_scale(obs, bits, consumer)
        base = absmax_scale(obs.absmax, bits, True)
        tops = [torch.exp2(c.double()) for c in pot_candidates(base)] if self.pot else [base * r for r in FLOAT_RATIOS]
        return ptf_search(obs.sample(), tops, bits, consumer), 0

    def per_head_scales(self, absmax: torch.Tensor, rows: torch.Tensor, bits: int,
                        partner: torch.Tensor | None = None) -> torch.Tensor:
        base = absmax_scale(absmax, bits, True)
        if self.pot:
            cands = torch.exp2(pot_candidates(base).double())
        else:
            cands = torch.stack([base * r for r in FLOAT_RATIOS])
        return head_scales(rows, cands, bits, partner)

    def softmax_head_scales(self, rows: torch.Tensor, bits: int) -> torch.Tensor:
        """Per head, the step 2^(-b - i/4) (PoT: i a multiple of 4) of least squared error on the probabilities: the
        largest ones clip, the many small ones keep their resolution."""
        steps = range(0, PROB_STEPS, 4 if self.pot else 1)
        cands = torch.tensor([2.0 ** (-bits - i / 4) for i in steps], dtype=torch.float64)
        x = rows.double()
        errors = torch.stack([((fake_quant(x, c, bits, False) - x) ** 2).sum((0, 2)) for c in cands])
        return cands[errors.argmin(0)]


def zero_point_allowed(site: ActQuant, node: fx.Node | None) -> bool:
    """Whether the integer program can carry a zero point on ``site`` (graph node ``node``): its producer adds one
    (ZERO_POINT_SOURCES)."""
    return node is not None and site.role in ("tensor", "ptf", "skewed") and not site.per_head \
        and _source(node.args[0]).meta.get("kind") in ZERO_POINT_SOURCES


class InformationRectification(torch.nn.Module):
    """IRM on the first ``rectified`` output features of a Linear (q and k of a qkv projection):
    y <- (y - mu + beta) / (gamma sqrt(var + eps)); mu, var batch statistics while training, running averages
    (``momentum``) otherwise; gamma = exp(log_gamma) > 0; with ``pot`` the gain 1 / (gamma sqrt(var + eps)) is
    rounded to a power of two (straight-through)."""

    def __init__(self, features: int, rectified: int, pot: bool = False, momentum: float = 0.1) -> None:
        super().__init__()
        self.features, self.rectified, self.pot, self.momentum = features, rectified, pot, momentum
        self.register_buffer("running_mean", torch.zeros(rectified, dtype=torch.float64))
        self.register_buffer("running_var", torch.ones(rectified, dtype=torch.float64))
        self.log_gamma = torch.nn.Parameter(torch.zeros(rectified, dtype=torch.float64))
        self.beta = torch.nn.Parameter(torch.zeros(rectified, dtype=torch.float64))

    def start_at_identity(self, mean: torch.Tensor, var: torch.Tensor) -> None:
        """Running statistics ``mean``, ``var`` and gamma, beta that make the rectification the identity on them."""
        with torch.no_grad():
            self.running_mean.copy_(mean)
            self.running_var.copy_(var)
            self.log_gamma.copy_(-0.5 * torch.log(var + IRM_EPS))
            self.beta.copy_(mean)

    def gain_offset(self, mean: torch.Tensor, var: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(a, c) with rectified y = a y + c."""
        gain = 1.0 / (torch.exp(self.log_gamma) * torch.sqrt(var + IRM_EPS))
        if self.pot:
            gain = torch.exp2(round_ste(torch.log2(gain)))
        return gain, (self.beta - mean) * gain

    def rectify(self, linear: QuantLinear, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """``linear``'s output for input ``x`` and quantized weights ``w``, rectified, in its folded form:
        a (x W^T + Q(b + c / a)) with the bias rounded on the unrectified accumulator grid, which is
        (a W) x + Q'(a b + c) on the grid a s_x s_w that the exported program has (the weight codes do not change)."""
        r = self.rectified
        acc = F.linear(x, w)
        if self.training:
            bias = linear.quant_bias(x.dtype)
            rows = (acc[..., :r] if bias is None else acc[..., :r] + bias[:r]).reshape(-1, r).double()
            mean, var = rows.mean(0), rows.var(0, unbiased=False)
            with torch.no_grad():
                self.running_mean.mul_(1 - self.momentum).add_(self.momentum * mean.detach())
                self.running_var.mul_(1 - self.momentum).add_(self.momentum * var.detach())
        else:
            mean, var = self.running_mean, self.running_var
        gain, offset = self.gain_offset(mean, var)
        ones = torch.ones(self.features - r, dtype=gain.dtype)
        base = linear.bias.double() if linear.bias is not None else torch.zeros(self.features, dtype=torch.float64)
        bias = base + torch.cat([offset / gain, torch.zeros_like(ones)])
        return (acc + linear.quant_bias(x.dtype, bias)) * torch.cat([gain, ones]).to(x.dtype)


def attention_prefixes(qg: QuantGraph) -> list[str]:
    """Attention modules with a qkv Linear and a q @ k^T MatMul (``<prefix>.qkv``, ``<prefix>.matmul_qk``)."""
    return [name[: -len(".matmul_qk")] for name, g in qg.gemms.items()
            if g.kind == "matmul" and name.endswith(".matmul_qk") and name[: -len("matmul_qk")] + "qkv" in qg.gemms]


def add_rectifiers(qg: QuantGraph, pot: bool) -> list[InformationRectification]:
    """An IRM on every attention's qkv Linear (its q and k features: the first two thirds)."""
    out = []
    for prefix in attention_prefixes(qg):
        linear: QuantLinear = qg.gemms[f"{prefix}.qkv"].module
        features = linear.weight.shape[0]
        linear.rectifier = InformationRectification(features, 2 * features // 3, pot)
        out.append(linear.rectifier)
    return out


@torch.no_grad()
def start_rectifiers(qg: QuantGraph, images: torch.Tensor, batch_size: int = 64) -> None:
    """Measure each rectifier's q/k feature statistics on ``images`` (the quantized model's, rectifiers off) and start
    it at the identity there."""
    linears = [qg.gemms[f"{p}.qkv"].module for p in attention_prefixes(qg)]
    rects = [m.rectifier for m in linears]
    sums = [[0, 0.0, 0.0] for _ in linears]

    def stats(i: int, rectified: int):
        def hook(_module, _inputs, out):
            rows = out[..., :rectified].reshape(-1, rectified).double()
            sums[i][0] += len(rows)
            sums[i][1] = sums[i][1] + rows.sum(0)
            sums[i][2] = sums[i][2] + (rows ** 2).sum(0)
        return hook

    handles = [m.register_forward_hook(stats(i, r.rectified)) for i, (m, r) in enumerate(zip(linears, rects))]
    for m in linears:
        m.rectifier = None
    try:
        for i in range(0, len(images), batch_size):
            qg(images[i:i + batch_size].float())
    finally:
        for h in handles:
            h.remove()
        for m, r in zip(linears, rects):
            m.rectifier = r
    for r, (n, s1, s2) in zip(rects, sums):
        mean = s1 / n
        r.start_at_identity(mean, (s2 / n - mean ** 2).clamp(min=0))


@torch.no_grad()
def fold_rectifiers(qg: QuantGraph) -> None:
    """Fold every IRM (running statistics) into its Linear: the q/k rows of W and their scales scale by the gain a
    (so the weight codes stay), the bias becomes a b + c. Lowering then sees a plain Linear."""
    for g in qg.gemms.values():
        linear = g.module
        if not isinstance(linear, QuantLinear) or linear.rectifier is None:
            continue
        rect: InformationRectification = linear.rectifier
        gain, offset = rect.gain_offset(rect.running_mean, rect.running_var)
        r = rect.rectified
        wq = linear.wq
        scale = wq.current_scale().detach().clone()
        codes = wq.codes(linear.weight.detach().double()) if wq.enabled else None
        new_scale = scale.clone()
        new_scale[:r] = scale[:r] * gain
        if codes is not None:  # keep the integer weights exactly: W = codes * scale
            linear.weight.copy_((codes * new_scale[:, None]).to(linear.weight.dtype))
        else:
            linear.weight[:r] *= gain[:, None].to(linear.weight.dtype)
        wq.lsq = None
        wq.set_scale(new_scale)
        bias = linear.bias if linear.bias is not None else torch.zeros(linear.weight.shape[0])
        new_bias = bias.detach().double().clone()
        new_bias[:r] = new_bias[:r] * gain + offset
        linear.bias = torch.nn.Parameter(new_bias)  # float64: its rounding on the accumulator grid must not move
        linear.rectifier = None


def prepare_student(qg: QuantGraph, pot: bool, irm: bool = True) -> list[InformationRectification]:
    """Make every learnable scale (and allowed zero point) trainable and (``irm``) put an IRM on every attention."""
    nodes = {n.meta["path"]: n for n in qg.gm.graph.nodes if n.meta.get("kind") == "site"}
    for site in qg.sites.values():
        if site.role in LEARNED_ROLES and not site.log2 and not site.twin_m:
            site.learn_scale(pot, zero_point=zero_point_allowed(site, nodes.get(site.name)),
                             shared=site.role == "ptf")
    for g in qg.gemms.values():
        if g.module is not None:
            g.module.wq.learn_scale(pot)
    return add_rectifiers(qg, pot) if irm else []


def similarity(x: torch.Tensor) -> torch.Tensor:
    """Row-normalised patch similarity x x^T [..., N, N] of x [..., N, D]. A quantized q or k often has all-zero rows
    (every code of a token rounds to 0); their similarity row stays 0 and gives no gradient (normalising it with an
    epsilon, as F.normalize does, sends 1/eps into q and wrecks the model)."""
    g = x @ x.transpose(-1, -2)
    norm = g.norm(dim=-1, keepdim=True)
    return torch.where(norm > 0, g / norm.clamp_min(1e-12), torch.zeros_like(g))


def dgd_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the tapped tensors (q and k of every attention, [B, H, N, D]), heads and images of the Frobenius
    distance between the teacher's and the student's row-normalised similarity matrices."""
    losses = [(similarity(t.detach()) - similarity(s)).flatten(-2).norm(dim=-1).mean()
              for s, t in zip(student, teacher)]
    return torch.stack(losses).mean()


class AttentionTaps:
    """Forward hooks that keep the q and k operands of every q @ k^T MatMul (as [B, H, N, D]) of one forward."""

    def __init__(self, qg: QuantGraph) -> None:
        self.values: list[torch.Tensor] = []
        self.active = True  # off while the model is evaluated
        self.handles = []
        for prefix in attention_prefixes(qg):
            for operand in ("a", "b"):
                site = qg.sites[f"{prefix}.matmul_qk.{operand}"]
                transpose = operand == "b"  # k arrives as k^T [B, H, D, N]
                self.handles.append(site.register_forward_hook(self._keep(transpose)))

    def _keep(self, transpose: bool):
        def hook(_module, _inputs, out):
            if self.active:
                self.values.append(out.transpose(-1, -2) if transpose else out)
        return hook

    def take(self) -> list[torch.Tensor]:
        values, self.values = self.values, []
        return values

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
