"""Q-ViT quantization-aware training (quant.methods.qvit, quant.qat).

- LSQ+ gradients of a site with a learnt scale and zero point equal the closed forms of the LSQ / LSQ+ papers.
- A learnt power-of-two weight scale runs and freezes as a power of two.
- The integer LayerNorm port still gives its output site's learnt scale the rounding-error gradient (a port whose
  output is already on the grid would hide it from LSQ).
- DGD's similarity distance against an independent numpy computation.
- Information rectification folds into the qkv weights: same outputs, power-of-two scales kept, and the program is
  bit-exact against the reference executor with output codes equal to fake-quant's (per-head softmax included).
- Constants that training changed (position embedding) reach the program.
- The training loop: an interrupted run resumed after its first epoch ends bit-identical to an uninterrupted one, and
  a short W2A2 run lifts held-out accuracy far above the untrained start.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from models.data import calibration_data
from quant.build import QuantModel, default_map
from quant.calibrate import calibrate
from quant.fakequant import ActQuant, QuantLayerNorm, WeightQuant
from quant.graph.capture import capture
from quant.methods.qvit import QViT, dgd_loss, prepare_student, similarity, start_rectifiers
from quant.qat import finish
from quant.parts import QuantError, qrange
from tests.quant.test_architectures import assert_exact


def test_lsq_plus_gradients_are_the_papers():
    torch.manual_seed(0)
    bits, signed = 3, True
    site = ActQuant("s", "tensor", bits)
    site.set_format(torch.tensor(0.3, dtype=torch.float64), zero_point=1)
    site.mode = "quant"
    site.learn_scale(zero_point=True)
    with torch.no_grad():
        site.lsq_zero.fill_(1.3)  # rounds to 1
    x = (torch.randn(400, dtype=torch.float64) * 1.2).requires_grad_()
    up = torch.randn(400, dtype=torch.float64)
    (site(x) * up).sum().backward()
    s, z = 0.3, 1.0
    lo, hi = qrange(bits, signed)
    v = x.detach() / s
    codes = torch.floor(v + 0.5) + z
    inside = (codes >= lo) & (codes <= hi)
    assert inside.any() and (~inside).any()
    d_s = torch.where(inside, torch.floor(v + 0.5) - v, codes.clamp(lo, hi) - z)   # LSQ
    d_z = torch.where(inside, torch.zeros_like(v), torch.full_like(v, -s))         # LSQ+ offset, per code
    assert torch.allclose(x.grad, up * inside, atol=1e-12)
    assert math.isclose(float(site.lsq.grad), float((up * d_s).sum()) * s * math.log(2), rel_tol=1e-9)
    assert math.isclose(float(site.lsq_zero.grad), float((up * d_z).sum()), rel_tol=1e-9)
    site.freeze()
    assert site.zero_point == 1 and site.lsq is None and site.lsq_zero is None


def test_power_of_two_weight_scales_learn_and_freeze_as_powers_of_two():
    wq = WeightQuant(4)
    wq.enabled = True
    wq.set_scale(torch.tensor([0.1, 0.3]))
    wq.learn_scale(pot=True)
    w = torch.randn(2, 8, dtype=torch.float64)
    out = wq(w)
    assert torch.equal(wq.current_scale(), torch.tensor([0.125, 0.25], dtype=torch.float64))
    out.pow(2).sum().backward()
    assert wq.lsq.grad is not None and wq.lsq.grad.abs().sum() > 0
    wq.freeze()
    assert torch.equal(wq.scale, torch.tensor([0.125, 0.25], dtype=torch.float64))
    assert torch.equal(wq(w), out.detach())


def _layernorm_scale_grad(integer: bool) -> float:
    torch.manual_seed(1)
    ln = torch.nn.LayerNorm(32).double()
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.3, 0.3)
    m = QuantLayerNorm("ln", ln)
    m.integer = integer
    src = ActQuant("in", "internal", 16)
    src.set_format(torch.tensor(2.0 ** -10, dtype=torch.float64))
    out = ActQuant("out", "tensor", 4)
    out.set_format(torch.tensor(0.4, dtype=torch.float64), zero_point=0)
    out.learn_scale()
    for s in (src, out):
        s.mode = "quant"
    m.in_site.append(src)
    m.out_site.append(out)
    x = src(torch.randn(64, 32, dtype=torch.float64) * 3)
    target = torch.randn(64, 32, dtype=torch.float64)
    ((out(m(x)) - target) ** 2).sum().backward()
    return float(out.lsq.grad)


def test_integer_layernorm_port_keeps_the_lsq_gradient_of_its_output_scale():
    """The integer port's output already sits on the site's grid; without taking the gradient of quantizing the float
    output in the port, the learnt scale would only see the clipped elements."""
    integer, float_ = _layernorm_scale_grad(True), _layernorm_scale_grad(False)
    assert abs(integer - float_) < 0.1 * abs(float_)


def test_dgd_distance_against_numpy():
    torch.manual_seed(2)
    s = [torch.randn(2, 3, 5, 4, dtype=torch.float64) for _ in range(2)]
    t = [torch.randn(2, 3, 5, 4, dtype=torch.float64) for _ in range(2)]

    def sim(x):
        g = x @ np.swapaxes(x, -1, -2)
        return g / np.linalg.norm(g, axis=-1, keepdims=True)

    want = np.mean([np.linalg.norm((sim(b.numpy()) - sim(a.numpy())).reshape(2, 3, -1), axis=-1).mean()
                    for a, b in zip(s, t)])
    assert math.isclose(float(dgd_loss(s, t)), want, rel_tol=1e-12)
    assert float(dgd_loss(s, s)) == 0.0
    assert torch.allclose(similarity(s[0]).norm(dim=-1), torch.ones(2, 3, 5, dtype=torch.float64))


@pytest.fixture(scope="module")
def qvit_student(deit_fmnist):
    """deit_fmnist at W4A4 with Q-ViT's initial formats, everything learnable, rectifiers started on 32 images."""
    def make(pot: bool, ptf: bool = False, log2_softmax: bool = False):
        calib = calibration_data("fmnist", deit_fmnist, 32)
        method = QViT(pot, ptf=ptf, log2_softmax=log2_softmax)
        c = calibrate(deit_fmnist, calib, method)
        c.data = None
        qg = c.quantize(default_map(4, 4).resolve(c.layers()))
        qg.set_integer_nonlinear(True)
        prepare_student(qg, pot)
        start_rectifiers(qg, calib)
        return qg
    return make


@pytest.mark.parametrize("pot", [False, True])
def test_rectifiers_fold_into_the_program_bit_exact(qvit_student, fmnist_test, pot):
    qg = qvit_student(pot)
    torch.manual_seed(3)
    rects = [g.module.rectifier for g in qg.gemms.values() if g.module is not None
             and getattr(g.module, "rectifier", None) is not None]
    assert len(rects) == 6
    with torch.no_grad():
        for r in rects:  # move them away from the identity they start at
            r.log_gamma.add_(torch.randn_like(r.log_gamma) * 0.3)
            r.beta.add_(torch.randn_like(r.beta) * 0.2 * r.running_var.sqrt())
    images = torch.from_numpy(fmnist_test[0][:16])
    qg.eval()
    model = QuantModel(qg, "deit_fmnist", {})
    with pytest.raises(QuantError, match="folded"):
        model.export()
    before = model(images)
    finish(qg)
    after = model(images)
    assert torch.allclose(before, after, atol=1e-3 * float(before.abs().max()))
    assert torch.equal(before.argmax(1), after.argmax(1))
    qkv = qg.gemms["blocks.0.attn.qkv"].module.wq.scale
    assert not pot or torch.equal(torch.exp2(torch.round(torch.log2(qkv))), qkv)
    program = model.export()
    softmax = next(op for op in program.ops if op.kind == "Softmax")
    assert program.tensors[softmax.outputs[0]].bits == 16  # 16-bit probabilities, then one requantization per head
    requant = next(op for op in program.ops if softmax.outputs[0] in op.inputs)
    heads = program.tensors[requant.outputs[0]]
    assert requant.kind == "Requant" and heads.bits == 4 and heads.axis % len(heads.shape) == 0  # the head axis
    assert_exact(model, program, fmnist_test[0][:2])


def test_ptf_layernorm_outputs_learn_one_step_and_a_zero_point_and_lower_bit_exact(qvit_student, fmnist_test):
    """With ``ptf`` a LayerNorm output keeps its per-channel power-of-two factors while LSQ moves the shared step and
    the zero point; the program shifts the consumer's input and folds the zero point through the shifts."""
    qg = qvit_student(False, ptf=True)
    site = qg.sites["blocks.0.mlp.fc1.in"]   # the second LayerNorm's output, read by fc1
    assert site.role == "ptf"
    factors = site.lsq_factors
    assert site.lsq.numel() == 1 and factors is not None and len(torch.unique(factors)) > 1
    assert torch.equal(torch.exp2(torch.round(torch.log2(factors))), factors)
    with torch.no_grad():
        for s in qg.sites.values():
            if s.role == "ptf":
                s.lsq.add_(0.3)             # a float step, off the calibrated one
                s.lsq_zero.fill_(-2.0)      # a zero point the lowering must fold through the shifts
    finish(qg)
    assert torch.allclose(site.scale / site.scale.max(), factors)
    model = QuantModel(qg, "deit_fmnist", {})
    program = model.export()
    fc1 = next(op for op in program.ops if op.name == "blocks.0.mlp.fc1")
    assert "input_shift" in fc1.params and program.tensors[fc1.inputs[0]].zero_point == -2
    assert_exact(model, program, fmnist_test[0][:2])


def test_a_saved_student_loads_back_to_the_same_model(qvit_student, deit_fmnist, fmnist_test, tmp_path):
    """save_quantized / load_quantized (what `vitsim simulate` rebuilds a QAT program's fake-quant twin from) with the
    tuning options on: PTF LayerNorm outputs (per-channel scales) and log2 attention probabilities (the recipe in the
    metadata says which softmax sites to build)."""
    from quant.mixed_precision import MixedPrecisionMap
    from models.data import input_shape
    from quant.qat import load_quantized, save_quantized

    qg = qvit_student(False, ptf=True, log2_softmax=True)
    finish(qg)
    images = torch.from_numpy(fmnist_test[0][:8])
    with torch.no_grad():
        want = qg(images.float())
    path = tmp_path / "s.qat.safetensors"
    save_quantized(qg, path, {"recipe": {"qat": {"log2_softmax": True}}})
    bits = MixedPrecisionMap.from_dict(default_map(4, 4).to_dict())
    back, meta = load_quantized(path, deit_fmnist, input_shape(deit_fmnist), bits)
    assert meta["recipe"]["qat"]["log2_softmax"]
    assert any(s.log2 for s in back.sites.values()) and any(s.axis is not None and s.role == "ptf"
                                                            for s in back.sites.values())
    with torch.no_grad():
        assert torch.equal(back(images.float()), want)


def test_trained_constants_reach_the_program(deit_fmnist, fmnist_test):
    """Lowering reads a constant (the position embedding) from the model as it is now, not as it was traced."""
    from quant.build import quantize_model
    from quant.methods import get_method

    calib = calibration_data("fmnist", deit_fmnist, 32)
    q = quantize_model(deit_fmnist, calib, get_method("minmax"), default_map(8, 8), name="deit_fmnist")
    with torch.no_grad():
        q.qg.gm.pos_embed.add_(0.5)
    assert_exact(q, q.export(), fmnist_test[0][:2])


class _Stop(Exception):
    pass


def _tiny(wbits: int = 3, abits: int = 3, **kw):
    from quant.qat import QATRecipe

    return QATRecipe("deit_fmnist", wbits, abits, **{"epochs": 2, "batch_size": 32, "train_images": 128, "calib": 32,
                                                     "held_out": 300, **kw})


@pytest.mark.parametrize("options", [{}, {"ema": 0.9, "mixup": 1.0}], ids=["recipe", "ema+mixup"])
def test_interrupted_training_resumes_to_the_same_model(tmp_path, monkeypatch, options):
    # with the weight average, the resumed run must carry the average on (not restart it from the checkpoint's
    # weights) and the mixed images must come from the run's seeded stream
    from quant.qat import train_qat

    monkeypatch.setenv("VITSIM_CACHE", str(tmp_path / "a"))
    recipe = _tiny(**options)

    def stop(line: str) -> None:
        if line.startswith("epoch 1/"):
            raise _Stop

    with pytest.raises(_Stop):
        train_qat(recipe, log=stop, progress=False)
    lines = []
    resumed = train_qat(recipe, log=lines.append, progress=False)
    assert resumed.resumed_from == 1 and lines[0].startswith("resuming")
    monkeypatch.setenv("VITSIM_CACHE", str(tmp_path / "b"))
    straight = train_qat(recipe, log=lambda s: None, progress=False)
    a, b = resumed.student.state_dict(), straight.student.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    untimed = [[{k: v for k, v in h.items() if k != "seconds"} for h in run.history] for run in (resumed, straight)]
    assert untimed[0] == untimed[1] and len(untimed[0]) == 3  # epoch 0 (the start), 1, 2


def test_mixup_blends_whole_images_with_one_weight_each():
    from quant.qat import mix

    x = torch.arange(16, dtype=torch.float32).view(16, 1, 1, 1).expand(16, 1, 4, 4).contiguous()  # image i = i
    out = mix(x, 1.0, torch.Generator().manual_seed(0))
    flat = out.view(16, -1)
    assert torch.equal(flat, flat[:, :1].expand_as(flat))      # one weight per image, not per pixel
    assert (out != x).any() and out.min() >= 0 and out.max() <= 15
    again = mix(x, 1.0, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)                               # seeded


def test_weight_average_swaps_in_and_restores_the_trained_tensors():
    from quant.qat import WeightAverage

    net = torch.nn.Linear(3, 2)
    net.register_buffer("count", torch.tensor(7))                 # integer state is not averaged
    start = net.weight.detach().clone()
    average = WeightAverage(net, 0.5)
    with torch.no_grad():
        net.weight.add_(2.0)
    average.update()
    trained = net.weight.detach().clone()
    with average.swapped():
        assert torch.allclose(net.weight, start + 1.0)            # half way between the start and the trained weights
    assert torch.equal(net.weight, trained) and int(net.count) == 7
    with pytest.raises(RuntimeError), average.swapped():
        raise RuntimeError
    assert torch.equal(net.weight, trained)                       # restored after an error too


def test_dgd_gives_no_gradient_through_an_all_zero_row():
    """A quantized q with a token whose codes all round to 0: its similarity row is 0 and must not send the 1/eps
    gradient of an epsilon-normalisation into q (which wrecked QAT before it was caught)."""
    torch.manual_seed(4)
    q = torch.randn(1, 2, 6, 4, dtype=torch.float64)
    q[0, 0, 2] = 0
    q.requires_grad_()
    teacher = [torch.randn(1, 2, 6, 4, dtype=torch.float64)]
    dgd_loss([q], teacher).backward()
    assert torch.isfinite(q.grad).all() and q.grad.abs().max() < 10
    assert torch.equal(similarity(q.detach())[0, 0, 2], torch.zeros(6, dtype=torch.float64))


def test_a_short_w2a2_run_lifts_held_out_accuracy_far_above_its_start(tmp_path, monkeypatch):
    """Quality floor: 40 steps of Q-ViT at W2A2 (batch 32) take the held-out fake-quant top-1 well above where the
    initial formats leave it; a training loop whose gradients do not reach the scales or weights (a broken STE, a
    detached port, DGD's 1/eps) stays near the start or falls."""
    from quant.qat import train_qat

    monkeypatch.setenv("VITSIM_CACHE", str(tmp_path))
    run = train_qat(_tiny(2, 2, epochs=1, train_images=1280, held_out=500), log=lambda s: None, progress=False)
    start, end = run.history[0]["held_out_top1"], run.history[-1]["held_out_top1"]
    assert end >= start + 0.08 and end >= 0.45, (start, end)  # measured: 0.390 -> 0.512


def test_qvit_layernorm_reparameterisation_is_applied_and_keeps_the_float_model(deit_fmnist):
    """QViT(reparam_layernorm=True) folds RepQ-ViT's channel ranges into the LayerNorms before the scales start (a
    flag that silently did nothing, or a fold that changed the float model, would fail); without it nothing moves."""
    calib = calibration_data("fmnist", deit_fmnist, 32, seed=0)
    for reparam in (False, True):
        captured = capture(deit_fmnist, tuple(calib.shape[1:]))
        gamma = captured.gm.get_submodule("blocks.0.norm2").weight.detach().clone()
        with torch.no_grad():
            before = captured.gm(calib).double()
        QViT(reparam_layernorm=reparam).prepare(captured, calib)
        with torch.no_grad():
            after = captured.gm(calib).double()
        assert torch.allclose(before, after, atol=2e-4 * before.abs().max())
        moved = not torch.equal(gamma, captured.gm.get_submodule("blocks.0.norm2").weight)
        assert moved == reparam


def test_recipe_map_sets_8_bit_inputs_on_the_diagnostic_layers_only():
    """``QATRecipe.abits8`` (the per-group diagnostic of bench/qat_tune.py) raises the matching layers' input widths
    and nothing else; the first and last GEMM stay at 8 bits."""
    from quant.qat import QATRecipe, recipe_map

    layers = {"patch_embed.proj": "conv", "blocks.0.attn.qkv": "linear", "blocks.0.attn.matmul_qk": "matmul",
              "blocks.0.mlp.fc2": "linear", "blocks.1.mlp.fc2": "linear", "head": "linear"}
    bits = recipe_map(QATRecipe("deit_fmnist", 4, 4, abits8=r".*\.mlp\.fc2")).resolve(layers)
    assert {n: (b["wbits"], b["abits"]) for n, b in bits.items()} == {
        "patch_embed.proj": (8, 8), "blocks.0.attn.qkv": (4, 4), "blocks.0.attn.matmul_qk": (4, 4),
        "blocks.0.mlp.fc2": (4, 8), "blocks.1.mlp.fc2": (4, 8), "head": (8, 8)}
    assert recipe_map(QATRecipe("deit_fmnist", 4, 4)).resolve(layers)["blocks.0.mlp.fc2"] == {"wbits": 4, "abits": 4}
