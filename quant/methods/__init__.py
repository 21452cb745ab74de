"""PTQ methods, one file per paper; ``get_method(name)`` returns one by its CLI name."""
from __future__ import annotations

from quant.methods.base import Method
from quant.methods.isvit import ISViT
from quant.methods.minmax import MinMax
from quant.methods.mptq import MPTQViT
from quant.methods.p2vit import P2ViT
from quant.methods.pfcr import PFCR
from quant.methods.ptq4vit import PTQ4ViT
from quant.methods.qhyvit import QHyViT
from quant.methods.repq import RepQViT
from quant.parts import QuantError

METHODS: dict[str, type[Method]] = {"minmax": MinMax, "ptq4vit": PTQ4ViT, "repq": RepQViT, "p2vit": P2ViT, "mptq": MPTQViT,
                                  "isvit": ISViT, "pfcr": PFCR, "qhyvit": QHyViT}


def get_method(name: str) -> Method:
    if name not in METHODS:
        raise QuantError(f"unknown method {name!r}; known: {sorted(METHODS)}")
    return METHODS[name]()


__all__ = ["METHODS", "Method", "get_method"]
