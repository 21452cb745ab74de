"""Integer op kinds of the program; importing this package registers them all."""
from hwsim.ops import gemm_ops, hybrid_ops, layout_ops, nonlinear_ops, reduce_ops, requant_ops  # noqa: F401
from hwsim.ops._registry import OPS, OpKind, register_op

__all__ = ["OPS", "OpKind", "register_op"]
