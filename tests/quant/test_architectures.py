"""Every architecture vitsim claims, quantized through the graph front-end and lowered: the integer program is
bit-exact against the int64 reference executor on every intermediate tensor, and its output codes equal the
fake-quant model's (integer nonlinear ops) on a batch of two, so a lowering that mixes samples would fail too.

timm models run with random weights and random-normal images; swin_fmnist (our configuration of timm's Swin for
28x28 inputs) with random weights on Fashion-MNIST images: bit-exactness does not need trained weights.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hwsim.executor import quantize_input, run
from hwsim.reference.executor import run_reference
from models.data import calibration_data, random_images
from models.registry import create_model
from quant.build import default_map, quantize_model
from quant.methods import get_method

TIMM = {
    "deit_tiny_patch16_224": {"Concat"},                        # class token beside the patches
    "vit_small_patch16_224": {"Concat"},
    "deit3_small_patch16_224": {"Concat"},                      # LayerScale folded into proj / fc2
    "swin_tiny_patch4_window7_224": {"Roll", "ReduceSum"},      # shifted windows, mean pooling
    # hybrids: BatchNorm folded into convs, depthwise convs, SiLU, the MobileViT unfold/fold and fusion concat
    "mobilevit_xs": {"Conv2d", "SiLU", "Concat", "ReduceSum"},
    # pooling mixer (pool(x) - x), LayerScale on it as a Mul, ReLU stem, GELU MLPs of 1x1 convs, split q/k/v
    "efficientformer_l1": {"AvgPool2d", "Mul", "ReLU", "GELU", "Slice"},
}


def _method(name: str):
    """A method by CLI name; ``-sulq`` is I&S-ViT without SOS, ``-short`` a reconstruction method at 2 iterations per
    unit (what is checked is the program's structure, and that every unit of the architecture reconstructs)."""
    from quant.methods.isvit import ISViT
    from quant.methods.pfcr import PFCR
    from quant.methods.qhyvit import QHyViT
    from tests.conftest import SulqOnly

    return {"isvit-sulq": SulqOnly(), "isvit-short": ISViT(iterations=2), "pfcr-short": PFCR(iterations=2),
            "qhyvit-short": QHyViT(iterations=2)}.get(name) or get_method(name)


def _check(net: torch.nn.Module, name: str, calib: torch.Tensor, images: np.ndarray, method: str,
           kinds: set[str]) -> None:
    q = quantize_model(net, calib, _method(method), default_map(8, 8), name=name)
    program = q.export()
    assert kinds <= {op.kind for op in program.ops}
    assert_exact(q, program, images)


def assert_exact(q, program, images: np.ndarray) -> None:
    """hwsim equals the int64 reference on every tensor, and its output codes equal fake-quant's."""
    x = quantize_input(program, images)
    traced = run(program, x, trace=True).trace
    ref = run_reference(program, x)
    assert [n for n in ref if not np.array_equal(ref[n], traced[n])] == []
    assert np.array_equal(traced[program.outputs[0]], q.forward_int(torch.from_numpy(images)).numpy())


@pytest.mark.parametrize("name", sorted(TIMM))
def test_timm_architecture_is_bit_exact(name):
    torch.manual_seed(0)
    net = create_model(name, pretrained=False)
    _check(net, name, torch.from_numpy(random_images(net, 2, seed=0)), random_images(net, 2, seed=5), "p2vit", TIMM[name])


@pytest.mark.parametrize("method", ["p2vit", "minmax", "ptq4vit", "mptq", "repq", "isvit-sulq", "isvit-short",
                                    "pfcr-short"])
def test_swin_fmnist_is_bit_exact(method, fmnist_test):
    torch.manual_seed(0)
    net = create_model("swin_fmnist", pretrained=False)
    calib = calibration_data("fmnist", net, 8, seed=0)   # bit-exactness needs no large set; the Hessian searches cost per image
    _check(net, "swin_fmnist", calib, fmnist_test[0][:2], method, {"Roll", "ReduceSum"})


@pytest.mark.parametrize("method", ["p2vit", "minmax", "ptq4vit", "mptq", "repq", "isvit-sulq", "isvit-short",
                                    "pfcr-short", "qhyvit-short"])
def test_mobilevit_fmnist_is_bit_exact(method, fmnist_test):
    torch.manual_seed(0)
    net = create_model("mobilevit_fmnist", pretrained=False)
    calib = calibration_data("fmnist", net, 8, seed=0)
    q = quantize_model(net, calib, _method(method), default_map(8, 8), name="mobilevit_fmnist")
    program = q.export()
    convs = [op for op in program.ops if op.kind == "Conv2d"]
    assert any(op.attrs.get("groups", 1) == program.spec(op.inputs[0]).shape[0] for op in convs)  # depthwise
    # P2-ViT gives one-sided operands (after SiLU) a zero point: the padding and the bias must honour it
    if method == "p2vit":
        assert any(program.spec(op.inputs[0]).zero_point for op in convs)
    assert_exact(q, program, fmnist_test[0][:2])


def test_depthwise_conv_with_an_input_scale_per_channel_is_exact(fmnist_test):
    """Q-HyViT's channel-wise activations at a depthwise convolution: forced on every depthwise input (so the test does
    not depend on the search choosing it), each output channel's accumulator takes its input channel's scale."""
    torch.manual_seed(0)
    net = create_model("mobilevit_fmnist", pretrained=False)
    q = quantize_model(net, calibration_data("fmnist", net, 8, seed=0), _method("minmax"), default_map(8, 8),
                       name="mobilevit_fmnist")
    forced = 0
    for g in q.qg.gemms.values():
        if g.kind == "conv2d" and g.module.groups > 1:
            site = g.inputs[0]
            channels = g.module.groups
            site.set_format(site.scale * torch.linspace(0.5, 2.0, channels, dtype=torch.float64), axis=-3)
            forced += 1
    assert forced >= 4
    program = q.export()
    assert_exact(q, program, fmnist_test[0][:2])


def test_one_stored_tensor_read_at_two_widths_is_exact(p2vit_models, fmnist_test):
    """q, k and v share the qkv output; the "mixed" map (tests/conftest.py) reads it with q/k at 4 bits beside v at 8
    and the reverse. The stored tensor must take the wider format and the narrower operands convert: storing at the
    first site's width clipped v's 8-bit codes to the 4-bit range, and hwsim then disagreed with fake-quant on a
    quarter of the test images."""
    q = p2vit_models["mixed"]
    program = q.export()
    assert {"blocks.0.attn.matmul_qk.a", "blocks.1.attn.matmul_av.b"} <= {op.name for op in program.ops}
    assert_exact(q, program, fmnist_test[0][:2])


def test_layerscale_and_mean_pooling_folds_keep_the_float_model():
    """The capture-time re-parameterisations (quant.graph.reparam) change no output of the float model."""
    from quant.graph.capture import capture

    for name, shape in (("deit3_small_patch16_224", (3, 224, 224)), ("swin_fmnist", (1, 28, 28))):
        torch.manual_seed(0)
        net = create_model(name, pretrained=False)
        captured = capture(net, shape)
        kinds = {n.meta["kind"] for n in captured.gm.graph.nodes}
        assert "scale" not in kinds and "mean" not in kinds  # gamma and 1/N are gone into the Linears
        x = torch.randn(3, *shape)
        with torch.no_grad():
            assert torch.allclose(captured.gm(x), net(x), atol=1e-4, rtol=1e-4)


def test_batchnorm_and_pooling_folds_keep_the_float_hybrid():
    """BatchNorm goes into the convolution before it, global average pooling into the classifier, LayerScale2d into
    its convolution, and the MobileViT block's size check is settled: the captured graph computes what the model
    does (trained-like BatchNorm statistics, not the identity of a fresh model), with none of those ops left."""
    from quant.graph.capture import capture

    for name, shape in (("mobilevit_fmnist", (1, 28, 28)), ("efficientformer_l1", (3, 224, 224))):
        torch.manual_seed(0)
        net = create_model(name, pretrained=False)
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):  # statistics far from the fresh (0, 1), so a wrong fold shows
                m.running_mean.uniform_(-1, 1)
                m.running_var.uniform_(0.5, 2)
                m.weight.data.uniform_(0.5, 1.5)
                m.bias.data.uniform_(-0.5, 0.5)
        captured = capture(net, shape)
        labels = {str(n.target) for n in captured.gm.graph.nodes}
        assert not any("batch_norm" in t or "AdaptiveAvgPool" in t for t in labels)
        assert not any(isinstance(m, (torch.nn.BatchNorm2d, torch.nn.AdaptiveAvgPool2d))
                       for m in captured.gm.modules())
        x = torch.randn(3, *shape)
        with torch.no_grad():
            assert torch.allclose(captured.gm(x), net(x), atol=1e-4, rtol=1e-4), name


def test_control_flow_on_the_batch_size_is_refused():
    """The capture settles a branch on the traced shapes only when both traced batch sizes take it."""
    from quant.graph.capture import UnsupportedOp, capture

    class ByBatch(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = torch.nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            x = self.fc(x.flatten(1))
            if x.shape[-1] % 2 == 0:     # the same at batch 1 and 2: settled
                x = x + 1
            if x.shape[0] > 1:           # differs between the traced batches: refused
                x = x * 2
            return x

    with pytest.raises(UnsupportedOp, match="depends on the batch size"):
        capture(ByBatch(), (1, 2, 2))


def test_every_search_width_lowers_bit_exact(p2vit_calibration, fmnist_test):
    """The mixed-precision searches pick weight and activation widths from quant.search.space.BIT_CHOICES: each block
    of deit_fmnist gets a different (wbits, abits) pair so that every width of the space, 2 and 5 bits included, is
    lowered and checked against the reference in one program."""
    from quant.build import quantize_calibrated
    from quant.search.space import BIT_CHOICES, SearchSpace, to_map

    space = SearchSpace.from_layers(p2vit_calibration.layers())
    pairs = [(w, a) for w, a in zip(BIT_CHOICES, BIT_CHOICES[::-1])]      # (2, 8), (3, 6), (4, 5), (5, 4), ...
    config = {name: dict(zip(("wbits", "abits"), pairs[int(name.split(".")[1]) % len(pairs)])) for name in space.layers}
    q = quantize_calibrated(p2vit_calibration, to_map(config), "deit_fmnist")
    program = q.export()
    widths = {program.spec(op.params["weight"]).bits for op in program.ops if "weight" in op.params}
    assert set(BIT_CHOICES) <= widths
    assert_exact(q, program, fmnist_test[0][:2])
