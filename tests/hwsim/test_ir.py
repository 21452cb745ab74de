"""Program files: exact round trip, byte-identical saves, and clear errors for damaged or inconsistent programs."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from hwsim.ir import Op, Program, ProgramError, TensorSpec, load, save, validate
from hwsim.ir.schema import VERSION


def tiny_program() -> Program:
    """input int8 [3, 4] -> Linear (2 outputs) -> Requant shift -> int8."""
    rng = np.random.default_rng(0)
    tensors = {
        "x": TensorSpec((3, 4), 8, True, exp=-4),
        "w": TensorSpec((2, 4), 4, True, channel_exps=(-3, -2), axis=0, constant=True),
        "b": TensorSpec((2,), 32, True, constant=True),
        "s": TensorSpec((2,), 8, True, constant=True),
        "acc": TensorSpec((3, 2), 32, True),
        "y": TensorSpec((3, 2), 8, True, exp=-3),
    }
    constants = {"w": rng.integers(-8, 8, (2, 4)), "b": np.array([100, -7]), "s": np.array([4, 5])}
    ops = [Op("Linear", "fc", ("x",), ("acc",), {"weight": "w", "bias": "b"}, {"acc_bits": 32}),
           Op("Requant", "rq", ("acc",), ("y",), {"shift": "s"}, {"mode": "shift", "axis": -1})]
    return Program("tiny", ["x"], ["y"], tensors, ops, constants, {"note": "test"})


def test_round_trip_is_exact(tmp_path):
    p = tiny_program()
    save(p, tmp_path / "p.vitp")
    q = load(tmp_path / "p.vitp")
    assert q.name == p.name and q.ops == p.ops and q.tensors == p.tensors and q.metadata == p.metadata
    assert all(np.array_equal(p.constants[k], q.constants[k]) for k in p.constants)


def test_same_program_gives_identical_bytes(tmp_path):
    save(tiny_program(), tmp_path / "a.vitp")
    save(tiny_program(), tmp_path / "b.vitp")
    assert (tmp_path / "a.vitp").read_bytes() == (tmp_path / "b.vitp").read_bytes()


def test_truncated_file_is_a_clear_error(tmp_path):
    path = tmp_path / "p.vitp"
    save(tiny_program(), path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ProgramError, match="p.vitp"):
        load(path)


def test_corrupted_constant_fails_the_checksum(tmp_path):
    path = tmp_path / "p.vitp"
    save(tiny_program(), path)
    raw = bytearray(path.read_bytes())
    raw[-3] ^= 0x01  # a byte inside the constants
    path.write_bytes(bytes(raw))
    with pytest.raises(ProgramError, match="checksum"):
        load(path)


def _rewrite_header(path, edit):
    from safetensors.numpy import load_file, save_file
    from safetensors import safe_open

    with safe_open(str(path), framework="numpy") as f:
        meta = f.metadata()
    wrapped = json.loads(meta["vitsim_program"])
    edit(wrapped["program"])
    meta["vitsim_program"] = json.dumps(wrapped, sort_keys=True, separators=(",", ":"))
    save_file(load_file(str(path)), str(path), metadata=meta)


def test_newer_version_is_refused(tmp_path):
    path = tmp_path / "p.vitp"
    save(tiny_program(), path)
    _rewrite_header(path, lambda b: b.update(version=VERSION + 1))
    with pytest.raises(ProgramError, match="newer"):
        load(path)


def test_not_a_program_file(tmp_path):
    path = tmp_path / "junk.vitp"
    path.write_bytes(b"hello, not a program")
    with pytest.raises(ProgramError, match="junk.vitp"):
        load(path)
    with pytest.raises(ProgramError, match="no such"):
        load(tmp_path / "missing.vitp")


@pytest.mark.parametrize("breakage,message", [
    (lambda p: p.tensors.update(acc=TensorSpec((3, 3), 32)), "shape"),
    (lambda p: p.tensors.pop("acc"), "missing tensor"),
    (lambda p: p.constants.update(w=np.full((2, 4), 9)), "exceed"),
    (lambda p: p.constants.pop("b"), "missing from the file"),
    (lambda p: p.ops.reverse(), "used before"),
    (lambda p: p.ops.__setitem__(0, dataclasses.replace(p.ops[0], kind="Bogus")), "unknown op kind"),
    (lambda p: p.tensors.update(w=dataclasses.replace(p.tensors["w"], shape=(2, 5))), "shape"),
    (lambda p: p.tensors.update(y=dataclasses.replace(p.tensors["y"], zero_point=200)), "outside"),
    (lambda p: p.tensors.update(acc=dataclasses.replace(p.tensors["acc"], zero_point=-3)), "needs a Requant or LayerNorm producer"),
    (lambda p: p.tensors.update(x=dataclasses.replace(p.tensors["x"], zero_point=-3)), "needs a Requant or LayerNorm producer"),
    # an unsigned 16-bit operand would wrap in the int16 GEMM datapath; a signed one fits
    (lambda p: p.tensors.update(x=dataclasses.replace(p.tensors["x"], bits=16, signed=False)), "17 signed bits"),
])
def test_inconsistent_programs_are_named(breakage, message):
    p = tiny_program()
    breakage(p)
    with pytest.raises(ProgramError, match=message):
        validate(p)


def test_a_signed_16_bit_gemm_operand_is_accepted():
    p = tiny_program()
    p.tensors["x"] = dataclasses.replace(p.tensors["x"], bits=16)
    validate(p)


def test_save_refuses_an_invalid_program_and_writes_nothing(tmp_path):
    p = tiny_program()
    p.constants.pop("b")
    with pytest.raises(ProgramError):
        save(p, tmp_path / "bad.vitp")
    assert list(tmp_path.iterdir()) == []
