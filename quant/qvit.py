"""The fully quantized ViT: timm's modules swapped for integer-faithful quantized ones, each able to emit its ops.

Every tensor between modules is an integer code (held in float64, exact below 2^53) with a known ``Scale``. Linear
layers and matmuls run in float64 on integer codes (exact), requantization follows DESIGN.md's rounding
(quant.scales.Requant), and Softmax, LayerNorm and GELU call hwsim's integer kernels, so this model computes the same
integers as the exported program. Each module's ``emit`` writes the same steps as ops (quant.export.ProgramBuilder).

Quantized points (P^2-ViT / FQ-ViT placement): the input image, the input of every Linear and of the patch-embed conv
(weights per output channel), q, k and v per head, the attention logits (16 bit), the softmax output (log2 or
uniform), the GELU input (16 bit) and output, every LayerNorm output, the residual stream (16 bit), cls token and
position embedding.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from hwsim.kernels.gelu import gelu_int
from hwsim.kernels.layernorm import NORM_BITS, layernorm_int
from hwsim.kernels.softmax import softmax_int
from quant.export import ProgramBuilder
from quant.parts import qrange, quantize, round_half_up
from quant.scales import Requant, Scale

ACC_BITS = 32


def _np(x: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(x.detach().numpy().astype(np.int64))


def _emit_requant(b: ProgramBuilder, name: str, x: str, rq: Requant, out_scale: Scale) -> str:
    params = {"shift": b.constant(f"{name}.shift", rq.shift, 8)}
    if rq.mode == "dyadic":
        params["multiplier"] = b.constant(f"{name}.multiplier", rq.multiplier, 32)
    return b.op("Requant", name, [x], f"{name}.out", rq.bits, rq.signed, out_scale, params,
                {"mode": rq.mode, "axis": rq.axis}, zero_point=rq.zero_point)


@dataclass
class Activation:
    """How a tensor is coded: real = (code - zero_point) * scale, codes of ``bits`` width and sign."""

    scale: Scale
    bits: int
    signed: bool = True
    zero_point: int = 0


class QuantLinear(torch.nn.Module):
    """y = requant(sum_k (x_k << input_shift_k) * W_nk + b_n): int weights per output channel, int32 bias.

    An input zero point z is folded into the bias (b_n - z * sum_k W_nk), so the integer program multiplies raw codes.
    """

    def __init__(self, name: str, linear: torch.nn.Linear, wbits: int, w_scale: torch.Tensor, x: Activation,
                 out: Activation | None) -> None:
        super().__init__()
        self.name = name
        self.wbits = wbits
        self.x = x
        self.out = out
        base = x.scale.value.min() if not x.scale.per_tensor else x.scale.value.reshape(())
        self.in_base = Scale(base.reshape(()))
        shift = torch.round(torch.log2(x.scale.value / base)).long()
        self.register_buffer("input_shift", shift if not x.scale.per_tensor else None)
        self.w_scale = Scale(w_scale.double(), axis=-1)
        self.register_buffer("weight", quantize(linear.weight.double(), w_scale.double()[:, None], wbits, True))
        self.acc_scale = self.in_base * self.w_scale
        if x.zero_point and self.input_shift is not None:
            raise ValueError(f"{name}: an input with both a zero point and PTF channel shifts is not supported")
        if linear.bias is not None or x.zero_point:
            lo, hi = qrange(ACC_BITS, True)
            bias = round_half_up(linear.bias.double() / self.acc_scale.value) if linear.bias is not None else 0.0
            self.register_buffer("bias", torch.clamp(bias - x.zero_point * self.weight.sum(1), lo, hi))
        else:
            self.bias = None
        self.requant = None if out is None else Requant.between(self.acc_scale, out.scale, out.bits, out.signed)

    def accumulate(self, x: torch.Tensor) -> torch.Tensor:
        if self.input_shift is not None:
            x = x * torch.exp2(self.input_shift.double())
        return F.linear(x, self.weight, self.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = self.accumulate(x)
        return acc if self.requant is None else self.requant(acc)

    def emit(self, b: ProgramBuilder, x: str) -> str:
        params = {"weight": b.constant(f"{self.name}.weight", self.weight, self.wbits, scale=Scale(self.w_scale.value, 0))}
        if self.bias is not None:
            params["bias"] = b.constant(f"{self.name}.bias", self.bias, ACC_BITS, scale=self.acc_scale)
        if self.input_shift is not None:
            params["input_shift"] = b.constant(f"{self.name}.input_shift", self.input_shift, 8)
        acc = b.op("Linear", self.name, [x], f"{self.name}.acc", ACC_BITS, True, self.acc_scale, params,
                   {"acc_bits": ACC_BITS})
        return acc if self.requant is None else _emit_requant(b, f"{self.name}.requant", acc, self.requant, self.out.scale)


class QuantLayerNorm(torch.nn.Module):
    """Integer LayerNorm (hwsim.kernels.layernorm): gamma*sqrt(C)/scale folded into a per-channel (G, shift) pair."""

    GAMMA_BITS = 16

    def __init__(self, name: str, ln: torch.nn.LayerNorm, out: Activation) -> None:
        super().__init__()
        self.name = name
        self.out = out
        c = ln.normalized_shape[0]
        gamma, beta = ln.weight.double(), ln.bias.double()
        out_scale = out.scale.value.expand(c) if out.scale.per_tensor else out.scale.value
        # Multiplier R = gamma * sqrt(C) / (2^31 * s_out) carried as G / 2^shift with G on 15 bits of magnitude.
        ratio = gamma * np.sqrt(c) / (2.0**NORM_BITS * out_scale)
        top = self.GAMMA_BITS - 2
        safe = torch.where(ratio == 0, torch.ones_like(ratio), ratio.abs())
        shift = (top - torch.floor(torch.log2(safe))).long().clamp(1, 62)
        g = round_half_up(ratio * torch.exp2(shift.double()))
        over = g.abs() >= 2 ** (self.GAMMA_BITS - 1)
        shift = torch.where(over, shift - 1, shift)
        g = round_half_up(ratio * torch.exp2(shift.double()))
        self.register_buffer("gamma_int", g)
        self.register_buffer("beta_int", round_half_up(beta * torch.exp2(shift.double()) / out_scale))
        self.register_buffer("shift", shift)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _np(x).reshape(-1, x.shape[-1])
        out = np.empty(rows.shape, dtype=np.int64)
        lo, hi = qrange(self.out.bits, self.out.signed)
        layernorm_int(rows, _np(self.gamma_int), _np(self.beta_int), _np(self.shift), lo, hi, out)
        return torch.from_numpy(out.reshape(x.shape)).double()

    def emit(self, b: ProgramBuilder, x: str) -> str:
        params = {"gamma": b.constant(f"{self.name}.gamma", self.gamma_int, self.GAMMA_BITS),
                  "beta": b.constant(f"{self.name}.beta", self.beta_int),
                  "shift": b.constant(f"{self.name}.shift", self.shift, 8)}
        return b.op("LayerNorm", self.name, [x], f"{self.name}.out", self.out.bits, self.out.signed, self.out.scale, params)


class QuantSoftmax(torch.nn.Module):
    """Integer softmax (hwsim.kernels.softmax) over the last axis; log2 codes or uniform unsigned output."""

    def __init__(self, name: str, frac_bits: int, bits: int, log2: bool) -> None:
        super().__init__()
        self.name, self.frac_bits, self.bits, self.log2 = name, frac_bits, bits, log2

    @property
    def scale(self) -> Scale:
        """Scale of the integer the next matmul multiplies by (log2 codes are decoded to 2^(2^b - 2 - code))."""
        return Scale.power_of_two(-((1 << self.bits) - 2) if self.log2 else -self.bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = _np(x).reshape(-1, x.shape[-1])
        out = np.empty(rows.shape, dtype=np.int64)
        softmax_int(rows, self.frac_bits, self.bits, self.log2, out)
        return torch.from_numpy(out.reshape(x.shape)).double()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        if not self.log2:
            return codes
        top = (1 << self.bits) - 2
        return torch.where(codes > top, torch.zeros_like(codes), torch.exp2(top - codes))

    def emit(self, b: ProgramBuilder, x: str) -> str:
        return b.op("Softmax", self.name, [x], f"{self.name}.out", self.bits, False, self.scale,
                    attrs={"frac_bits": self.frac_bits, "log2": self.log2})


class QuantAttention(torch.nn.Module):
    """Multi-head self-attention on integers: qkv, per-head q/k/v codes, Q.K^T, integer softmax, attn.V, proj."""

    def __init__(self, name: str, attn: torch.nn.Module, qkv: QuantLinear, qkv_act: Activation, logit_exp: int,
                 softmax: QuantSoftmax, out: Activation, proj: QuantLinear) -> None:
        super().__init__()
        self.name = name
        self.heads, self.head_dim = attn.num_heads, attn.head_dim
        self.qkv, self.softmax, self.proj = qkv, softmax, proj
        self.qkv_act, self.out = qkv_act, out
        h = self.heads
        s = qkv_act.scale.value.reshape(3, h, self.head_dim)[:, :, 0]
        self.q_scale, self.k_scale, self.v_scale = (Scale(s[i], axis=0) for i in range(3))
        self.logit_scale = Scale.power_of_two(logit_exp)
        self.qk_requant = Requant.between(self.q_scale * self.k_scale, self.logit_scale, 16, True)
        self.av_scale = Scale(self.softmax.scale.value * self.v_scale.value, axis=0)
        self.av_requant = Requant.between(self.av_scale, out.scale, out.bits, out.signed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bsz, n, c = x.shape
        qkv = self.qkv(x).reshape(bsz, n, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        logits = self.qk_requant(q @ k.transpose(-2, -1))
        attn = self.softmax.decode(self.softmax(logits))
        o = self.av_requant(attn @ v)
        return self.proj(o.transpose(1, 2).reshape(bsz, n, c))

    def emit(self, b: ProgramBuilder, x: str) -> str:
        t = self.name
        qkv = self.qkv.emit(b, x)
        n = b.program.tensors[qkv].shape[0]
        h, d = self.heads, self.head_dim
        qkv = b.op("Reshape", f"{t}.qkv_split", [qkv], f"{t}.qkv_split.out", self.qkv_act.bits, attrs={"shape": [n, 3, h, d]})
        qkv = b.op("Permute", f"{t}.qkv_heads", [qkv], f"{t}.qkv_heads.out", self.qkv_act.bits, attrs={"perm": [1, 2, 0, 3]})
        parts = {}
        for i, (part, scale) in enumerate(zip("qkv", (self.q_scale, self.k_scale, self.v_scale))):
            s = b.op("Slice", f"{t}.{part}_slice", [qkv], f"{t}.{part}_slice.out", self.qkv_act.bits,
                     attrs={"axis": 0, "start": i, "stop": i + 1})
            parts[part] = b.op("Reshape", f"{t}.{part}", [s], f"{t}.{part}.out", self.qkv_act.bits, scale=scale,
                               attrs={"shape": [h, n, d]})
        acc = b.op("MatMul", f"{t}.matmul_qk", [parts["q"], parts["k"]], f"{t}.matmul_qk.acc", ACC_BITS,
                   scale=self.q_scale * self.k_scale, attrs={"transpose_b": True, "acc_bits": ACC_BITS})
        logits = _emit_requant(b, f"{t}.logits", acc, self.qk_requant, self.logit_scale)
        attn = self.softmax.emit(b, logits)
        acc = b.op("MatMul", f"{t}.matmul_av", [attn, parts["v"]], f"{t}.matmul_av.acc", ACC_BITS, scale=self.av_scale,
                   attrs={"transpose_b": False, "acc_bits": ACC_BITS,
                          "a_log2_bits": self.softmax.bits if self.softmax.log2 else 0})
        o = _emit_requant(b, f"{t}.attn_out", acc, self.av_requant, self.out.scale)
        o = b.op("Permute", f"{t}.merge_heads", [o], f"{t}.merge_heads.out", self.out.bits, scale=self.out.scale,
                 attrs={"perm": [1, 0, 2]})
        o = b.op("Reshape", f"{t}.merge", [o], f"{t}.merge.out", self.out.bits, scale=self.out.scale,
                 attrs={"shape": [n, h * d]})
        return self.proj.emit(b, o)


class QuantMlp(torch.nn.Module):
    """fc1 -> 16-bit GELU input -> integer GELU (hwsim.kernels.gelu) -> requant -> fc2."""

    SIG_BITS = 8

    def __init__(self, name: str, fc1: QuantLinear, gelu_out: Activation, fc2: QuantLinear) -> None:
        super().__init__()
        self.name, self.fc1, self.fc2, self.gelu_out = name, fc1, fc2, gelu_out
        self.frac_bits = -int(fc1.out.scale.exps())
        self.gelu_scale = Scale.power_of_two(-self.frac_bits - self.SIG_BITS)
        self.gelu_requant = Requant.between(self.gelu_scale, gelu_out.scale, gelu_out.bits, gelu_out.signed,
                                            gelu_out.zero_point)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = _np(self.fc1(x))
        out = np.empty(g.shape, dtype=np.int64)
        gelu_int(g, self.frac_bits, self.SIG_BITS, out)
        return self.fc2(self.gelu_requant(torch.from_numpy(out).double()))

    def emit(self, b: ProgramBuilder, x: str) -> str:
        g = self.fc1.emit(b, x)
        g = b.op("GELU", f"{self.name}.gelu", [g], f"{self.name}.gelu.out", ACC_BITS, scale=self.gelu_scale,
                 attrs={"frac_bits": self.frac_bits, "sig_bits": self.SIG_BITS})
        g = _emit_requant(b, f"{self.name}.gelu_requant", g, self.gelu_requant, self.gelu_out.scale)
        return self.fc2.emit(b, g)


class QuantResidualAdd(torch.nn.Module):
    """x + branch on the 16-bit residual stream; the branch arrives at the output scale, x is aligned by a shift."""

    def __init__(self, name: str, in_exp: int, out_exp: int, bits: int = 16) -> None:
        super().__init__()
        self.name, self.bits, self.out_exp = name, bits, out_exp
        self.shift_a = out_exp - in_exp

    def forward(self, a: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
        lo, hi = qrange(self.bits, True)
        return torch.clamp(torch.floor(a * 2.0 ** (-self.shift_a) + 0.5) + branch, lo, hi)

    def emit(self, b: ProgramBuilder, a: str, branch: str) -> str:
        return b.op("Add", self.name, [a, branch], f"{self.name}.out", self.bits, scale=Scale.power_of_two(self.out_exp),
                    attrs={"shift_a": self.shift_a, "shift_b": 0})


class QuantBlock(torch.nn.Module):
    """Pre-norm transformer block: x + attn(norm1(x)), then + mlp(norm2(x)), on integers."""

    def __init__(self, name: str, norm1: QuantLayerNorm, attn: QuantAttention, add1: QuantResidualAdd,
                 norm2: QuantLayerNorm, mlp: QuantMlp, add2: QuantResidualAdd) -> None:
        super().__init__()
        self.name = name
        self.norm1, self.attn, self.add1, self.norm2, self.mlp, self.add2 = norm1, attn, add1, norm2, mlp, add2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.add1(x, self.attn(self.norm1(x)))
        return self.add2(x, self.mlp(self.norm2(x)))

    def emit(self, b: ProgramBuilder, x: str) -> str:
        x = self.add1.emit(b, x, self.attn.emit(b, self.norm1.emit(b, x)))
        return self.add2.emit(b, x, self.mlp.emit(b, self.norm2.emit(b, x)))


class QuantPatchEmbed(torch.nn.Module):
    """Patch embedding conv (int weights per output channel) -> requant to the residual stream -> tokens [L, C]."""

    def __init__(self, conv: torch.nn.Conv2d, wbits: int, w_scale: torch.Tensor, x: Activation, out_exp: int) -> None:
        super().__init__()
        self.name = "patch_embed.proj"
        self.wbits, self.x = wbits, x
        self.stride, self.padding = conv.stride[0], conv.padding[0]
        self.w_scale = Scale(w_scale.double(), axis=0)
        self.register_buffer("weight", quantize(conv.weight.double(), w_scale.double()[:, None, None, None], wbits, True))
        self.acc_scale = x.scale * self.w_scale
        lo, hi = qrange(ACC_BITS, True)
        self.register_buffer("bias", torch.clamp(round_half_up(conv.bias.double() / self.acc_scale.value), lo, hi))
        self.out_scale = Scale.power_of_two(out_exp)
        self.requant = Requant.between(Scale(self.acc_scale.value, axis=0), self.out_scale, 16, True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        acc = F.conv2d(x, self.weight, self.bias, stride=self.stride, padding=self.padding)
        return self.requant(acc).flatten(2).transpose(1, 2)

    def emit(self, b: ProgramBuilder, x: str) -> str:
        params = {"weight": b.constant(f"{self.name}.weight", self.weight, self.wbits, scale=Scale(self.w_scale.value, 0)),
                  "bias": b.constant(f"{self.name}.bias", self.bias, ACC_BITS)}
        acc = b.op("Conv2d", self.name, [x], f"{self.name}.acc", ACC_BITS, scale=Scale(self.acc_scale.value, 0),
                   params=params, attrs={"stride": self.stride, "padding": self.padding, "acc_bits": ACC_BITS})
        y = _emit_requant(b, f"{self.name}.requant", acc, self.requant, self.out_scale)
        c, h, w = b.program.tensors[y].shape
        y = b.op("Reshape", "patch_embed.flatten", [y], "patch_embed.flatten.out", 16, scale=self.out_scale,
                 attrs={"shape": [c, h * w]})
        return b.op("Permute", "patch_embed.tokens", [y], "patch_embed.tokens.out", 16, scale=self.out_scale,
                    attrs={"perm": [1, 0]})


class QuantViT(torch.nn.Module):
    """A timm VisionTransformer (class token, absolute position embedding) as an integer-faithful quantized model."""

    def __init__(self, name: str, input_act: Activation, patch_embed: QuantPatchEmbed, cls_token: torch.Tensor,
                 pos_embed: torch.Tensor, embed_exp: int, blocks: list[QuantBlock], norm: QuantLayerNorm,
                 head: QuantLinear, logit_exp: int, metadata: dict) -> None:
        super().__init__()
        self.model_name = name
        self.input_act = input_act
        self.patch_embed = patch_embed
        self.embed_scale = Scale.power_of_two(embed_exp)
        self.register_buffer("cls_int", quantize(cls_token.double().reshape(1, -1), self.embed_scale.value, 16, True))
        self.register_buffer("pos_int", quantize(pos_embed.double()[0], self.embed_scale.value, 16, True))
        self.blocks = torch.nn.ModuleList(blocks)
        self.norm, self.head = norm, head
        self.logit_scale = Scale.power_of_two(logit_exp)
        self.metadata = metadata

    def quantize_input(self, images: torch.Tensor) -> torch.Tensor:
        return quantize(images.double(), self.input_act.scale.value, self.input_act.bits, self.input_act.signed)

    @torch.no_grad()
    def forward_int(self, images: torch.Tensor) -> torch.Tensor:
        """Integer logits (codes at ``logit_scale``) of float images."""
        x = self.patch_embed(self.quantize_input(images))
        x = torch.cat([self.cls_int.expand(len(x), 1, -1), x], dim=1)
        lo, hi = qrange(16, True)
        x = torch.clamp(x + self.pos_int, lo, hi)
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x[:, :1]))[:, 0]

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return (self.forward_int(images) * self.logit_scale.value).float()

    def export(self) -> "object":
        """The integer program (hwsim.ir.Program) computing exactly ``forward_int``."""
        b = ProgramBuilder(self.model_name)
        shape = tuple(int(s) for s in self.metadata["input_shape"])
        x = b.input("input", shape, self.input_act.bits, self.input_act.signed, self.input_act.scale)
        x = self.patch_embed.emit(b, x)
        cls = b.constant("cls_token", self.cls_int, 16, scale=self.embed_scale)
        pos = b.constant("pos_embed", self.pos_int, 16, scale=self.embed_scale)
        x = b.op("Concat", "embed.cat_cls", [cls, x], "embed.cat_cls.out", 16, scale=self.embed_scale, attrs={"axis": 0})
        x = b.op("Add", "embed.add_pos", [x, pos], "embed.out", 16, scale=self.embed_scale, attrs={"shift_a": 0, "shift_b": 0})
        for block in self.blocks:
            x = block.emit(b, x)
        x = b.op("Slice", "cls_select", [x], "cls_select.out", 16, attrs={"axis": 0, "start": 0, "stop": 1})
        x = self.norm.emit(b, x)
        x = self.head.emit(b, x)
        n = b.program.tensors[x].shape[-1]
        x = b.op("Reshape", "logits", [x], "logits", 16, scale=self.logit_scale, attrs={"shape": [n]})
        return b.build([x], self.metadata)
