"""hwsim.ir: the integer program (schema, validation, one-file save/load). numpy only: no torch, no quant."""
from hwsim.ir.schema import FORMAT, VERSION, Op, Program, TensorSpec
from hwsim.ir.serialize import load, save
from hwsim.ir.validate import ProgramError, validate

__all__ = ["FORMAT", "VERSION", "Op", "Program", "ProgramError", "TensorSpec", "load", "save", "validate"]
