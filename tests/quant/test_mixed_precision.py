"""Mixed-precision maps: priorities, YAML round trip, clear errors."""
from __future__ import annotations

import pytest

from quant.mixed_precision import MixedPrecisionMap
from quant.parts import QuantError

LAYERS = {"patch_embed.proj": "conv", "blocks.0.attn.qkv": "linear", "blocks.0.attn.matmul": "matmul",
          "blocks.1.attn.qkv": "linear", "head": "linear"}


def test_priorities_global_optype_regex_layer():
    mp = MixedPrecisionMap.from_dict({
        "global": {"wbits": 4, "abits": 8},
        "op_type": {"linear": {"wbits": 6}, "matmul": {"abits": 6}},
        "regex": [{"pattern": r"blocks\.1\..*", "wbits": 3}, {"pattern": r"blocks\..*qkv", "abits": 5}],
        "layer": {"head": {"wbits": 8}},
    })
    bits = mp.resolve(LAYERS)
    assert bits["patch_embed.proj"] == {"wbits": 4, "abits": 8}
    assert bits["blocks.0.attn.qkv"] == {"wbits": 6, "abits": 5}
    assert bits["blocks.1.attn.qkv"] == {"wbits": 3, "abits": 5}
    assert bits["blocks.0.attn.matmul"] == {"wbits": 4, "abits": 6}
    assert bits["head"] == {"wbits": 8, "abits": 8}


def test_yaml_round_trip(tmp_path):
    mp = MixedPrecisionMap.from_dict({"global": {"wbits": 4, "abits": 4}, "regex": [{"pattern": "head", "abits": 8}],
                                      "layer": {"blocks.0.attn.qkv": {"wbits": 8}}})
    mp.save(tmp_path / "mp.yaml")
    back = MixedPrecisionMap.load(tmp_path / "mp.yaml")
    assert back == mp and back.resolve(LAYERS) == mp.resolve(LAYERS)


@pytest.mark.parametrize("doc,message", [
    ({"global": {"wbits": 4, "abits": 4}, "layer": {"blocks.9.attn.qkv": {"wbits": 8}}}, "unknown layers"),
    ({"global": {"wbits": 1, "abits": 4}}, "wbits"),
    ({"global": {"wbits": 4, "abits": 33}}, "abits"),
    ({"global": {"wbits": 4, "abits": 4}, "regex": [{"pattern": "nothing_matches", "wbits": 8}]}, "matches no layer"),
    ({"global": {"wbits": 4, "abits": 4}, "op_type": {"attention": {"wbits": 8}}}, "unknown op_type"),
    ({"global": {"wbits": 4}}, "both wbits and abits"),
    ({"global": {"wbits": 4, "abits": 4, "gbits": 2}}, "unknown keys"),
])
def test_bad_maps_are_clear_errors(doc, message):
    with pytest.raises(QuantError, match=message):
        MixedPrecisionMap.from_dict(doc).resolve(LAYERS)


def test_bad_yaml_file_names_the_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("global: {wbits: 4, abits: [")
    with pytest.raises(QuantError, match="broken.yaml"):
        MixedPrecisionMap.load(path)
