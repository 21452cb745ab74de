"""The executor against the reference executor on every intermediate tensor, and against fake-quant on real models."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from hwsim.executor import quantize_input, run
from hwsim.ir import Op, ProgramError, validate
from hwsim.reference.executor import run_reference
from tests.conftest import int_input
from tests.hwsim.test_ir import tiny_program


def test_tiny_program_by_hand():
    p = tiny_program()
    x = np.arange(12, dtype=np.int32).reshape(1, 3, 4) - 6
    res = run(p, x, trace=True)
    acc = x[0].astype(np.int64) @ p.constants["w"].T + p.constants["b"]
    expected = np.clip(np.floor((acc + (1 << (p.constants["s"] - 1))) / (1 << p.constants["s"])), -128, 127)
    assert np.array_equal(res.outputs["y"][0], expected)
    assert np.array_equal(res.trace["acc"][0], acc)


@pytest.mark.parametrize("zero_point", [-128, -7, 0, 5, 127])
def test_requant_adds_the_output_zero_point_after_rounding_then_saturates(zero_point):
    p = tiny_program()
    p.tensors["y"] = dataclasses.replace(p.tensors["y"], zero_point=zero_point)
    x = np.random.default_rng(1).integers(-128, 128, (64, 3, 4)).astype(np.int32)
    res = run(p, x, trace=True)
    s = p.constants["s"]
    unclamped = np.floor((res.trace["acc"] + (1 << (s - 1))) / (1 << s)) + zero_point
    expected = np.clip(unclamped, -128, 127)
    assert np.array_equal(res.outputs["y"], expected)
    assert np.array_equal(run_reference(p, x)["y"], expected)
    assert res.saturations["rq"] == int(((unclamped < -128) | (unclamped > 127)).sum())


def test_a_zero_point_read_by_an_op_that_ignores_it_is_refused():
    p = tiny_program()
    p.tensors["y"] = dataclasses.replace(p.tensors["y"], zero_point=-7)
    p.tensors["z"] = dataclasses.replace(p.tensors["y"], zero_point=0, bits=16)
    p.ops.append(Op("Add", "twice", ("y", "y"), ("z",), attrs={"shift_a": 0, "shift_b": 0}))
    p.outputs = ["z"]
    with pytest.raises(ProgramError, match="ignore zero points"):
        validate(p)


def test_a_layout_op_keeps_the_zero_point_of_the_codes_it_moves():
    p = tiny_program()
    p.tensors["y"] = dataclasses.replace(p.tensors["y"], zero_point=-7)
    p.tensors["z"] = dataclasses.replace(p.tensors["y"], shape=(6,), zero_point=-7)
    p.ops.append(Op("Reshape", "flat", ("y",), ("z",), attrs={"shape": [6]}))
    p.outputs = ["z"]
    validate(p)  # codes moved with their zero point: fine
    p.tensors["z"] = dataclasses.replace(p.tensors["z"], zero_point=0)
    with pytest.raises(ProgramError, match="keeps its input's zero point"):
        validate(p)


def test_executor_rejects_float_and_out_of_range_input():
    p = tiny_program()
    with pytest.raises(TypeError, match="integers"):
        run(p, np.zeros((1, 3, 4), np.float32))
    with pytest.raises(ValueError, match="range"):
        run(p, np.full((1, 3, 4), 500, np.int32))
    with pytest.raises(ValueError, match="does not fit"):
        run(p, np.zeros((1, 4, 3), np.int32))


@pytest.mark.parametrize("bits", [(8, 8), (4, 4)])
def test_every_intermediate_tensor_matches_reference_on_64_test_images(bits, p2vit_programs, fmnist_test):
    program = p2vit_programs[bits]
    x = quantize_input(program, fmnist_test[0][:64])
    traced = run(program, x, trace=True).trace
    ref = run_reference(program, x)
    assert set(ref) <= set(traced)
    mismatched = [name for name in ref if not np.array_equal(ref[name], traced[name])]
    assert mismatched == [], f"tensors differing from the reference: {mismatched[:5]}"
    assert len(ref) > 100


@pytest.mark.parametrize("bits", [(8, 8), (4, 4)])
def test_integer_logits_equal_fake_quant_logits(bits, p2vit_models, p2vit_programs, fmnist_test):
    import torch

    images = fmnist_test[0][:256]
    fq = p2vit_models[bits].forward_int(torch.from_numpy(images)).numpy()
    ints = run(p2vit_programs[bits], quantize_input(p2vit_programs[bits], images)).logits
    assert np.array_equal(ints, fq)


def test_batch_composition_does_not_change_results(p2vit_programs):
    program = p2vit_programs[(4, 4)]
    x = int_input(program, 6)
    whole = run(program, x).logits
    parts = np.concatenate([run(program, x[:1]).logits, run(program, x[1:]).logits])
    assert np.array_equal(whole, parts)
