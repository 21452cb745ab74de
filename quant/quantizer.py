"""A quantizer: a preset spec (quant.presets) plus a scale search, fitted on calibration data, returning its metadata.

    q = Quantizer("Int4WeightPerChannelPoT", observer="mse").fit(weight, inputs=x)
    codes = q.quantize(weight); approx = q(weight); q.metadata()  # bits, sign, zero points, exponents or dyadics

Scale search (``observer``), on the data's range (per tensor, per output channel of a weight, or per channel / head on
the last axis of an activation):
- ``minmax``: the range itself, |x| max (symmetric) or [min, max] (``Shifted`` presets, with a zero point);
- ``percentile``: the ``percentile`` quantile of |x| (clipping, PTQ4ViT / RepQ-ViT style; symmetric presets);
- ``mse``: the candidate of least error, where the error is the quantization MSE of x itself, or the output MSE of the
  consuming product: ||X (W - Q(W))^T||^2 per output channel for a weight given its ``inputs`` X, ||(x - Q(x)) W^T||^2
  for a per-tensor activation given its ``consumer`` weight W (P^2-ViT's adaptive rounding uses both).
  PoT candidates are 2^a, a in floor(log2 s) + POT_WINDOW (P^2-ViT, Shi et al., TVLSI 2024); float candidates s * r.
A PoT scale from ``minmax`` / ``percentile`` is rounded up to the next power of two (no extra clipping).
Log2 presets (post-softmax probabilities, FQ-ViT's log-int-softmax): code = round(log2(1 / p)) in the log domain with
sqrt(2) as 181/128 (as hwsim.kernels.softmax.log2_code), value 2^-code, and the top code 2^b - 1 stands for 0; the
integer side multiplies by such values with shifts. Log-sqrt(2) codes (RepQ-ViT) take half-octave steps: the log2 code
of p^2, value 2^(-code / 2) with the odd codes' sqrt(2) as 181/128 (hwsim.ops.gemm_ops.decode_log_sqrt2).
Codes round half up (docs/numerics.md): the same integers hwsim computes.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from quant.observers import Observer
from quant.parts import QuantError, absmax_scale, dyadic, fake_quant, pot_floor_exp, qrange, quantize, round_half_up
from quant.presets import QuantSpec, preset

POT_WINDOW = (-1, 0, 1, 2)                                 # P^2-ViT's adaptive rounding window around floor(log2 s)
FLOAT_RATIOS = tuple(1.0 - 0.05 * i for i in range(14))   # float MSE candidates: s * 1.0, 0.95, ..., 0.35
OBSERVERS = ("minmax", "percentile", "mse")
SQRT2_NUM, SQRT2_DEN = 181, 128


@dataclass(frozen=True)
class QuantMeta:
    """What the integer side needs to know of a quantized tensor: real = (code - zero_point) * scale."""

    preset: str
    bits: int
    signed: bool
    axis: int | None                              # channel axis, None per tensor
    zero_point: tuple[int, ...]
    exps: tuple[int, ...] | None                  # power-of-two scales: scale = 2^exp
    dyadic: tuple[tuple[int, int], ...] | None    # float scales: scale ~ multiplier / 2^shift (31-bit multiplier)
    log2: bool = False                            # codes are exponents: value 2^-code, the top code means 0


def pot_candidates(base: torch.Tensor) -> torch.Tensor:
    """Exponent candidates [len(POT_WINDOW), *base.shape] around floor(log2 base)."""
    floor = pot_floor_exp(base)
    return torch.stack([floor + d for d in POT_WINDOW])


def head_scales(rows: torch.Tensor, candidates: torch.Tensor, bits: int,
                partner: torch.Tensor | None = None) -> torch.Tensor:
    """Per head, the candidate scale of least error for a MatMul operand: ``rows`` [n, heads, k] of the operand,
    ``candidates`` [c, heads] scales. With the other operand's rows ``partner`` (Q.K^T), the error is that of the
    logits, ||(q - Q(q)) k^T||^2 = sum dq G dq^T through the partner's Gram matrix G (P^2-ViT's output MSE); without,
    the operand's own quantization MSE."""
    x = rows.double()
    gram = None if partner is None else torch.einsum("rhd,rhe->hde", partner.double(), partner.double())
    errors = []
    for c in candidates.double():
        dq = fake_quant(x, c[None, :, None], bits, True) - x
        errors.append(torch.einsum("rhd,hde,rhe->h", dq, gram, dq) if gram is not None else (dq ** 2).sum((0, 2)))
    return candidates.double().gather(0, torch.stack(errors).argmin(0)[None])[0]


def quant_error(x: torch.Tensor, scale: torch.Tensor, zero: torch.Tensor | int, bits: int, signed: bool,
                consumer: torch.Tensor | None = None) -> torch.Tensor:
    """Summed squared error of quantizing ``x`` [rows, in]: of x itself, or of the product x @ consumer.T."""
    dx = fake_quant(x, scale, bits, signed, zero) - x
    return ((dx if consumer is None else dx @ consumer.double().t()) ** 2).sum()


def log2_codes(p: torch.Tensor, bits: int, sqrt2: bool = False) -> torch.Tensor:
    """Log2 codes of probabilities ``p`` in [0, 1]: round(log2(1 / p)) in the log domain, 2^bits - 1 for 0 and below;
    ``sqrt2``: round(log_sqrt2(1 / p)), the log2 code of p^2."""
    p = p.double()
    if sqrt2:
        p = p * p
    zero_code = (1 << bits) - 1
    # p = m 2^e, m in [0.5, 1): 2^-e <= 1/p < 2^(1-e) for m > 1/2, and 1/p >= sqrt(2) 2^-e (round up) iff 181 m <= 128;
    # m = 1/2 gives 1 - e, which the same test returns. Exact in float64 (181 m needs 8 more bits than m).
    m, e = torch.frexp(p)
    code = (SQRT2_NUM * m <= SQRT2_DEN).double() - e.double()
    return torch.where(p > 0, torch.clamp(code, max=zero_code), torch.full_like(p, zero_code))


def log2_values(codes: torch.Tensor, bits: int, sqrt2: bool = False) -> torch.Tensor:
    """Values of log codes: 2^-code, or with ``sqrt2`` 2^(-code / 2) as the integer side computes it (odd codes
    (181/128) 2^(-(code + 1) / 2)); the top code is 0."""
    zero_code = (1 << bits) - 1
    c = codes.double()
    if sqrt2:
        value = torch.exp2(-torch.ceil(c / 2)) * torch.where(c % 2 == 1, SQRT2_NUM / SQRT2_DEN, 1.0)
    else:
        value = torch.exp2(-c)
    return torch.where(codes >= zero_code, torch.zeros_like(c), value)


CLIP_PERCENTILES = (1.0, 0.99999, 0.9999, 0.999)  # RepQ-ViT / I&S-ViT: clipping candidates, chosen by MSE


def percentile_mse(obs: Observer, bits: int, signed: bool, asymmetric: bool,
                   percentiles: tuple[float, ...] = CLIP_PERCENTILES) -> tuple[torch.Tensor, int]:
    """Per-tensor (scale, zero point) clipped at the percentile of least quantization MSE on the observer's sample
    (RepQ-ViT, Li et al., ICCV 2023; I&S-ViT): 1.0 is the observed range. Asymmetric: [q_(1-p), q_p] onto the whole
    code range with a zero point; symmetric: the p-quantile of |x| onto the largest code."""
    x = obs.sample().reshape(-1)
    lo_all, hi_all = float(obs.min_c.min()), float(obs.max_c.max())
    qmin, qmax = qrange(bits, signed)
    flat = x.float()
    best: tuple[float, torch.Tensor, int] | None = None
    for p in percentiles:
        if asymmetric:
            lo = lo_all if p == 1.0 else float(torch.quantile(flat, 1 - p))
            hi = hi_all if p == 1.0 else float(torch.quantile(flat, p))
            lo, hi = min(lo, 0.0), max(hi, 0.0)
            scale = torch.tensor(max(hi - lo, 1e-12) / (qmax - qmin), dtype=torch.float64)
            zero = int(min(max(qmin - round_half_up(torch.tensor(lo / float(scale))), qmin), qmax))
        else:
            top = max(abs(lo_all), abs(hi_all)) if p == 1.0 else float(torch.quantile(flat.abs(), p))
            scale, zero = absmax_scale(torch.tensor(top), bits, signed), 0
        err = float(((fake_quant(x, scale, bits, signed, zero) - x) ** 2).mean())
        if best is None or err < best[0]:
            best = (err, scale, zero)
    return best[1], best[2]


class Quantizer:
    """Fit once (``fit``), then ``quantize`` (integer codes as float64), ``dequantize``, ``__call__`` (fake-quant)."""

    def __init__(self, spec: QuantSpec | str, observer: str = "minmax", percentile: float = 0.9999) -> None:
        self.spec = preset(spec) if isinstance(spec, str) else spec
        if observer not in OBSERVERS:
            raise QuantError(f"unknown observer {observer!r}; known: {OBSERVERS}")
        if observer == "percentile" and self.spec.asymmetric:
            raise QuantError("the percentile observer clips |x| and is for symmetric presets")
        if not 0 < percentile <= 1:
            raise QuantError(f"percentile must be in (0, 1], got {percentile}")
        self.observer, self.percentile = observer, percentile
        self.scale: torch.Tensor | None = None
        self.zero_point: torch.Tensor | None = None

    # --- layout: every fit works on a 2-D view whose columns are the channels (one column per tensor) -------------
    @property
    def per_channel(self) -> bool:
        return self.spec.granularity != "PerTensor"

    @property
    def axis(self) -> int | None:
        if not self.per_channel:
            return None
        return 0 if self.spec.role == "Weight" else -1

    def _columns(self, x: torch.Tensor) -> torch.Tensor:
        x = x.double()
        if not self.per_channel:
            return x.reshape(-1, 1)
        return x.reshape(len(x), -1).t() if self.spec.role == "Weight" else x.reshape(-1, x.shape[-1])

    def _broadcast(self, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        if not self.per_channel:
            return t.reshape(())
        return t.reshape((-1,) + (1,) * (x.dim() - 1)) if self.spec.role == "Weight" else t

    # --- fitting -------------------------------------------------------------------------------------------------
    def fit(self, x: torch.Tensor | Observer, inputs: torch.Tensor | None = None,
            consumer: torch.Tensor | None = None) -> "Quantizer":
        """Choose the scale (and zero point) from ``x``: a weight [out, ...], activation rows [..., C] or an Observer.

        ``inputs`` [rows, in] (weights) or ``consumer`` [out, in] (per-tensor activations) make ``mse`` search the
        output error of the product instead of the tensor's own error."""
        if self.spec.scale_form == "Log2":
            self.scale, self.zero_point = torch.ones((), dtype=torch.float64), torch.zeros((), dtype=torch.float64)
            return self
        weight_ok = self.spec.role == "Weight" and self.per_channel
        if inputs is not None and not weight_ok or consumer is not None and self.per_channel:
            raise QuantError("output-MSE search: 'inputs' is for per-channel weights, "
                             "'consumer' for per-tensor activations")
        if isinstance(x, Observer):
            sample = x.sample()  # one draw: the sample is random
            rows = sample if self.per_channel else sample.reshape(-1, 1)
            absmax = x.absmax_c if self.per_channel else x.absmax.reshape(1)
            lo = x.min_c if self.per_channel else x.min_c.min().reshape(1)
            hi = x.max_c if self.per_channel else x.max_c.max().reshape(1)
        else:
            if not torch.isfinite(x).all():
                raise QuantError("cannot fit a quantizer on NaN or Inf")
            sample = x.double().reshape(-1, x.shape[-1])
            rows = self._columns(x)
            absmax, lo, hi = rows.abs().amax(0), rows.amin(0), rows.amax(0)
        bits, signed = self.spec.bits, self.spec.signed
        if self.spec.asymmetric:
            qmin, qmax = qrange(bits, signed)
            base = (hi.clamp(min=0.0) - lo.clamp(max=0.0)).double().clamp(min=1e-12) / (qmax - qmin)
        elif self.observer == "percentile":
            base = absmax_scale(torch.quantile(rows.abs().float(), self.percentile, dim=0).double(), bits, signed)
        else:
            base = absmax_scale(absmax, bits, signed)
        if self.observer != "mse":
            scale = torch.exp2(torch.ceil(torch.log2(base))) if self.spec.pot else base
            options = [(scale, self._zero_for(scale, lo))]
        elif self.spec.pot:
            scales = [torch.exp2(c.double()) for c in pot_candidates(base)]
            options = [(s, self._zero_for(s, lo)) for s in scales]
        else:
            options = [(base * r, self._zero_for(base * r, lo)) for r in FLOAT_RATIOS]
        pick = self._pick(options, rows, inputs, consumer, sample)
        self.scale = torch.stack([o[0] for o in options]).gather(0, pick[None])[0]
        self.zero_point = torch.stack([o[1] for o in options]).gather(0, pick[None])[0]
        if not self.per_channel:
            self.scale, self.zero_point = self.scale.reshape(()), self.zero_point.reshape(())
        return self

    def _zero_for(self, scale: torch.Tensor, lo: torch.Tensor) -> torch.Tensor:
        """Zero point mapping the range's minimum to the lowest code (0 for symmetric presets)."""
        if not self.spec.asymmetric:
            return torch.zeros_like(scale)
        qmin, qmax = qrange(self.spec.bits, self.spec.signed)
        return torch.clamp(qmin - round_half_up(lo.clamp(max=0.0).double() / scale), qmin, qmax)

    def _pick(self, options: list[tuple[torch.Tensor, torch.Tensor]], cols: torch.Tensor, inputs: torch.Tensor | None,
              consumer: torch.Tensor | None, act_rows: torch.Tensor | None) -> torch.Tensor:
        """Per column, the index of the option of least error (first on ties)."""
        if len(options) == 1:
            return torch.zeros(options[0][0].shape, dtype=torch.long)
        bits, signed = self.spec.bits, self.spec.signed
        errors = []
        for scale, zero in options:
            if inputs is not None:  # weight: ||X (W - Q(W))^T||^2 per output channel (cols = W^T)
                err = ((inputs.double() @ (cols - fake_quant(cols, scale, bits, signed, zero))) ** 2).mean(0)
            elif consumer is not None:  # activation: ||(x - Q(x)) W^T||^2, one value per tensor
                err = quant_error(act_rows, scale, zero, bits, signed, consumer).reshape(1)
            else:
                err = ((fake_quant(cols, scale, bits, signed, zero) - cols) ** 2).mean(0)
            errors.append(err)
        return torch.stack(errors).argmin(0)

    # --- use ------------------------------------------------------------------------------------------------------
    def _fitted(self) -> None:
        if self.scale is None:
            raise QuantError(f"{self.spec.name}: fit the quantizer before using it")

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        self._fitted()
        if self.spec.scale_form == "Log2":
            return log2_codes(x, self.spec.bits)
        return quantize(x.double(), self._broadcast(self.scale, x), self.spec.bits, self.spec.signed,
                        self._broadcast(self.zero_point, x))

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        self._fitted()
        if self.spec.scale_form == "Log2":
            return log2_values(codes, self.spec.bits)
        return (codes - self._broadcast(self.zero_point, codes)) * self._broadcast(self.scale, codes)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.dequantize(self.quantize(x))

    def metadata(self) -> QuantMeta:
        self._fitted()
        spec = self.spec
        zero = tuple(int(z) for z in self.zero_point.reshape(-1))
        if spec.scale_form == "Log2":
            return QuantMeta(spec.name, spec.bits, False, None, (0,), None, None, True)
        values = self.scale.reshape(-1)
        exps = tuple(int(e) for e in torch.round(torch.log2(values))) if spec.pot else None
        pairs = None if spec.pot else tuple((d.multiplier, d.shift) for d in map(dyadic, values.tolist()))
        return QuantMeta(spec.name, spec.bits, spec.signed, self.axis, zero, exps, pairs)
