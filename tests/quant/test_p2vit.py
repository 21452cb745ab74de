"""P^2-ViT on deit_fmnist: power-of-two everywhere, smoothing keeps the float model, bad input fails cleanly."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from quant.build import default_map, quantize_model
from quant.graph.capture import capture
from quant.methods import get_method
from quant.methods.p2vit import P2ViT
from quant.parts import QuantError


@pytest.mark.parametrize("bits", [(8, 8), (4, 4)])
def test_every_requant_of_a_p2vit_export_is_a_shift(bits, p2vit_programs):
    program = p2vit_programs[bits]
    kinds = {op.attrs.get("mode") for op in program.ops if op.kind == "Requant"}
    assert kinds == {"shift"}
    # and every weight's scale is a power of two per channel, activations per tensor or per channel (PTF)
    for name, spec in program.tensors.items():
        if name.endswith(".weight"):
            assert spec.channel_exps is not None
    assert {op.attrs["log2"] for op in program.ops if op.kind == "Softmax"} == {True}
    # only the GELU outputs carry a zero point (signed codes, z <= 0, folded into fc2's bias)
    zero_points = {name: spec.zero_point for name, spec in program.tensors.items() if spec.zero_point}
    assert zero_points and all(name.endswith("mlp.fc2.in.requant.out") for name in zero_points)
    assert all(-(1 << (bits[1] - 1)) <= z < 0 for z in zero_points.values())


def test_ptf_input_shifts_are_in_0_to_3(p2vit_programs):
    shifts = [program.constants[op.params["input_shift"]] for program in p2vit_programs.values()
              for op in program.ops if "input_shift" in op.params]
    assert shifts and all(s.min() >= 0 and s.max() <= 3 for s in shifts)


def test_minmax_export_uses_dyadic_requant(deit_fmnist):
    from models.data import calibration_data

    calib = calibration_data("fmnist", deit_fmnist, 32)
    q = quantize_model(deit_fmnist, calib, get_method("minmax"), default_map(8, 8), metadata={"input_shape": [1, 28, 28]})
    modes = {op.attrs.get("mode") for op in q.export().ops if op.kind == "Requant"}
    assert "dyadic" in modes


def test_smoothing_and_scale_folding_keep_the_float_model(deit_fmnist, fmnist_test):
    from models.data import calibration_data

    captured = capture(deit_fmnist, (1, 28, 28))
    P2ViT().prepare(captured, calibration_data("fmnist", deit_fmnist, 32))
    x = torch.from_numpy(fmnist_test[0][:32])
    with torch.no_grad():
        assert torch.allclose(captured.gm(x), deit_fmnist(x), atol=1e-3)
    changed = [not torch.equal(captured.gm.get_submodule(f"blocks.{i}.norm1").weight, b.norm1.weight)
               for i, b in enumerate(deit_fmnist.blocks)]
    assert any(changed)


def test_adaptive_rounding_clips_outlier_channels_and_generalises():
    # each channel has one outlier weight: the min-max power of two (ceil) wastes 4-bit codes on it; P2ViT's output-MSE
    # rounding must pick a smaller power of two on such channels and lower the layer's error on fresh inputs
    from quant.parts import fake_quant

    torch.manual_seed(0)
    w = torch.randn(16, 32, dtype=torch.float64) * 0.1
    w[:, 0] = 1.0
    x = torch.randn(256, 32, dtype=torch.float64)
    x[:, 0] *= 0.05  # the outlier's input is small, so clipping it costs little
    fresh = torch.randn(4096, 32, dtype=torch.float64)
    fresh[:, 0] *= 0.05
    chosen = P2ViT().weight_scale(w, x, 4)
    naive = torch.exp2(torch.ceil(torch.log2(w.abs().amax(1) / 7)))
    assert torch.all(torch.exp2(torch.round(torch.log2(chosen))) == chosen)
    assert torch.all(chosen < naive)

    def err(scale):
        return float(((fresh @ (w - fake_quant(w, scale[:, None], 4, True)).t()) ** 2).mean())

    assert err(chosen) < 0.5 * err(naive)


def test_gelu_output_zero_point_beats_symmetric_codes_on_fc2_output_error():
    from quant.observers import Observer
    from quant.parts import fake_quant

    torch.manual_seed(0)
    obs = Observer("gelu")
    obs.update(torch.nn.functional.gelu(torch.randn(2048, 32, dtype=torch.float64) * 1.5))
    w = torch.randn(16, 32, dtype=torch.float64)
    method = P2ViT()
    scale, zero = method.zero_point_scale(obs, 4, w)
    assert -8 <= zero < 0 and method.zero_point_scale(obs, 4, w) == (scale, zero)
    sym = method.tensor_scale(obs, 4, consumer=w)
    x = obs.sample()

    def err(s, z):
        return float((((fake_quant(x, s, 4, True, z) - x) @ w.t()) ** 2).sum())

    assert err(scale, zero) < err(sym, 0)


def test_q_and_k_scales_minimise_the_logit_error_among_the_rounding_candidates():
    from quant.parts import fake_quant
    from quant.quantizer import POT_WINDOW, pot_candidates
    from quant.parts import absmax_scale

    torch.manual_seed(0)
    # q's first dims are large but k barely uses them: the logits care about q's small dims, its own MSE does not
    dims = torch.tensor([8.0] * 4 + [1.0] * 4)
    q = torch.randn(512, 2, 8, dtype=torch.float64) * torch.tensor([1.0, 3.0])[:, None] * dims
    k = torch.randn(512, 2, 8, dtype=torch.float64) / dims**2
    absmax = q.abs().amax((0, 2))
    chosen = P2ViT().per_head_scales(absmax, q, 4, k)
    assert not torch.equal(chosen, P2ViT().per_head_scales(absmax, q, 4))
    cands = pot_candidates(absmax_scale(absmax, 4, True))
    for h in range(2):
        errors = []
        for d in range(len(POT_WINDOW)):
            s = torch.exp2(cands[d, h].double())
            errors.append(float((((fake_quant(q[:, h], s, 4, True) - q[:, h]) @ k[:, h].t()) ** 2).sum()))
        assert chosen[h] == torch.exp2(cands[int(np.argmin(errors)), h].double())


def test_ablation_switches_turn_our_choices_off(deit_fmnist):
    from models.data import calibration_data

    calib = calibration_data("fmnist", deit_fmnist, 32)
    meta = {"input_shape": [1, 28, 28]}
    plain = quantize_model(deit_fmnist, calib, P2ViT(output_mse=False, gelu_zero_point=False, logit_mse=False),
                         default_map(4, 4), metadata=meta).export()
    assert not any(spec.zero_point for spec in plain.tensors.values())
    full = quantize_model(deit_fmnist, calib, P2ViT(), default_map(4, 4), metadata=meta).export()
    assert any(spec.zero_point for spec in full.tensors.values())
    qkv_shift = "blocks.0.attn.qkv.requant.shift"  # q and k per head by the logit error, not their own MSE
    assert not np.array_equal(full.constants[qkv_shift], plain.constants[qkv_shift])


def test_empty_and_nonfinite_calibration_are_errors(deit_fmnist):
    method = get_method("p2vit")
    with pytest.raises(QuantError, match="empty"):
        quantize_model(deit_fmnist, torch.zeros(0, 1, 28, 28), method, default_map(8, 8))
    bad = torch.zeros(4, 1, 28, 28)
    bad[1, 0, 3, 3] = float("nan")
    with pytest.raises(QuantError, match="NaN"):
        quantize_model(deit_fmnist, bad, method, default_map(8, 8))
    bad[1, 0, 3, 3] = float("inf")
    with pytest.raises(QuantError, match="Inf"):
        quantize_model(deit_fmnist, bad, method, default_map(8, 8))


def test_same_seed_gives_byte_identical_program(deit_fmnist, tmp_path):
    from hwsim.ir import save
    from models.data import calibration_data

    paths = []
    for i in range(2):
        calib = calibration_data("fmnist", deit_fmnist, 32, seed=3)
        q = quantize_model(deit_fmnist, calib, get_method("p2vit"), default_map(4, 8), metadata={"input_shape": [1, 28, 28]})
        paths.append(tmp_path / f"p{i}.vitp")
        save(q.export(), paths[-1])
    assert paths[0].read_bytes() == paths[1].read_bytes()
