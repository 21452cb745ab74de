"""One-file storage of an integer program: safetensors (constants) with the program JSON and a SHA-256 in its header.

Deterministic: keys sorted, JSON with sorted keys, integer constants stored in the narrowest dtype of their declared
width, so the same program always gives byte-identical files. ``load`` rejects a truncated or corrupted file (the
safetensors header, then the checksum over JSON and constants), another format, or a newer version, naming the file.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

from hwsim.ir.schema import FORMAT, VERSION, Op, Program, TensorSpec
from hwsim.ir.validate import ProgramError, validate


def _storage_dtype(spec: TensorSpec) -> np.dtype:
    for bits, signed_t, unsigned_t in ((8, np.int8, np.uint8), (16, np.int16, np.uint16), (32, np.int32, np.uint32)):
        if spec.bits <= bits:
            return np.dtype(signed_t if spec.signed else unsigned_t)
    return np.dtype(np.int64)


def _digest(text: str, constants: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256(text.encode())
    for name in sorted(constants):
        arr = np.ascontiguousarray(constants[name])
        h.update(name.encode())
        h.update(str(arr.dtype).encode())
        h.update(str(arr.shape).encode())
        h.update(arr.tobytes())
    return h.hexdigest()


def program_digest(program: Program) -> str:
    """SHA-256 over the program's JSON and constants as stored: equal digests mean byte-identical files."""
    constants = {k: np.ascontiguousarray(v, dtype=_storage_dtype(program.tensors[k])) for k, v in program.constants.items()}
    return _digest(program_json(program), constants)


def program_json(program: Program) -> str:
    body = {"format": FORMAT, "version": VERSION, "name": program.name, "inputs": program.inputs,
            "outputs": program.outputs, "tensors": {k: v.to_json() for k, v in sorted(program.tensors.items())},
            "ops": [op.to_json() for op in program.ops], "metadata": program.metadata}
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def save(program: Program, path: str | os.PathLike) -> None:
    """Validate and write ``program`` atomically (nothing half-written on error)."""
    validate(program)
    path = Path(path)
    constants = {k: np.ascontiguousarray(v, dtype=_storage_dtype(program.tensors[k])) for k, v in sorted(program.constants.items())}
    text = program_json(program)
    # One metadata key: safetensors keeps its metadata in a hash map, so several keys would not keep a fixed order.
    meta = {"vitsim_program": '{"checksum":"%s","program":%s}' % (_digest(text, constants), text)}
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        save_file(constants, tmp, metadata=meta)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load(path: str | os.PathLike) -> Program:
    """Read, verify and validate a program file."""
    path = Path(path)
    if not path.exists():
        raise ProgramError(f"{path}: no such program file")
    try:
        constants = load_file(str(path))
        from safetensors import safe_open

        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
    except Exception as err:  # safetensors raises several types for a damaged header or short file
        raise ProgramError(f"{path}: not a readable program file (truncated or corrupted?): {err}") from err
    header = meta.get("vitsim_program")
    if header is None:
        raise ProgramError(f"{path}: safetensors file without a vitsim program header")
    try:
        wrapped = json.loads(header)
        body, checksum = wrapped["program"], wrapped["checksum"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ProgramError(f"{path}: program header is damaged: {err}") from err
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    if body.get("format") != FORMAT:
        raise ProgramError(f"{path}: format {body.get('format')!r}, expected {FORMAT!r}")
    version = body.get("version")
    if not isinstance(version, int) or version > VERSION:
        raise ProgramError(f"{path}: program version {version} is newer than this vitsim reads ({VERSION}); upgrade vitsim")
    if checksum != _digest(text, constants):
        raise ProgramError(f"{path}: checksum mismatch: the file is corrupted")
    program = Program(name=body["name"], inputs=list(body["inputs"]), outputs=list(body["outputs"]),
                      tensors={k: TensorSpec.from_json(v) for k, v in body["tensors"].items()},
                      ops=[Op.from_json(o) for o in body["ops"]],
                      constants={k: v.astype(np.int64) for k, v in constants.items()},
                      metadata=body.get("metadata", {}))
    try:
        validate(program)
    except ProgramError as err:
        raise ProgramError(f"{path}: {err}") from err
    return program
