"""I&S-ViT (quant/methods/isvit.py): SULQ's eta search and integer program, and SOS improving on the same quantizers
without it."""
from __future__ import annotations

import numpy as np
import torch

from hwsim.ops.gemm_ops import decode_sulq, log_decode_exp
from quant.methods.isvit import ETA_GRID, ISViT, sulq_values
from quant.observers import Observer
from tests.quant.test_architectures import assert_exact


def test_sulq_fake_quant_values_are_the_integer_decode_minus_eta():
    for bits in (3, 4):
        codes = torch.arange(2**bits)
        for eta in (4, 41, 410):
            t = -log_decode_exp(bits, False, True)
            integer = (decode_sulq(codes.numpy(), bits).astype(np.int64) - eta * 2 ** (t - 12)) / 2.0**t
            p = 2.0 ** -codes[:-1].double() - eta / 4096  # the probability whose p + eta is exactly code c's 2^-c
            ok = p >= 0
            assert ok.sum() >= 3
            assert np.array_equal(sulq_values(p[ok], bits, eta).numpy(), integer[:-1][ok.numpy()]), (bits, eta)


def test_eta_comes_from_the_grid_and_follows_the_data():
    """Many tiny probabilities want a larger eta than a few large ones (eta moves the code range up to them)."""
    m = ISViT()
    flat, peaked = Observer("flat"), Observer("peaked")
    flat.update(torch.softmax(torch.randn(64, 197) * 0.1, -1))
    peaked.update(torch.softmax(torch.randn(64, 8) * 4, -1))
    grid = {max(1, round(e * 4096)) for e in ETA_GRID}
    eta_flat, eta_peaked = m.softmax_eta(flat, 4), m.softmax_eta(peaked, 4)
    assert eta_flat in grid and eta_peaked in grid and eta_flat != eta_peaked


def test_sulq_program_is_bit_exact(isvit_sulq_w4a4, fmnist_test):
    program = isvit_sulq_w4a4.export()
    softmax = [op for op in program.ops if op.kind == "Softmax"]
    assert softmax and all(op.attrs.get("eta", 0) > 0 for op in softmax)
    assert all(op.attrs.get("a_eta", 0) > 0 for op in program.ops if op.name.endswith("matmul_av"))
    assert_exact(isvit_sulq_w4a4, program, fmnist_test[0][:4])


def test_sos_beats_the_same_quantizers_without_it_at_w3a3(deit_fmnist, fmnist_test):
    """A short SOS schedule (60 iterations per unit and stage, 128 calibration images) must lift W3A3 integer top-1
    on the first 1 000 test images clearly above SULQ alone: a stage that learns nothing, trains the wrong
    parameters or leaves the weights float fails here. Measured on 2026-12-02: SULQ alone 83.7 %, with SOS 84.8 %
    (deterministic under the seed; the bar is half the measured gain)."""
    from hwsim.executor import predict
    from models.data import calibration_data
    from quant.build import default_map, quantize_model
    from tests.conftest import SulqOnly

    calib = calibration_data("fmnist", deit_fmnist, 128, seed=0)
    images, labels = fmnist_test[0][:1000], fmnist_test[1][:1000]
    top1 = {}
    for name, method in (("sulq", SulqOnly()), ("sos", ISViT(iterations=60))):
        q = quantize_model(deit_fmnist, calib, method, default_map(3, 3), name="deit_fmnist")
        program = q.export()
        assert all(g.module.wq.enabled for g in q.qg.gemms.values() if g.module is not None)
        top1[name] = float((predict(program, images) == labels).mean())
    assert top1["sos"] >= top1["sulq"] + 0.005, top1
