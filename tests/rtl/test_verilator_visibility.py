"""rtl.runner's Verilator visibility: only the top module's ports are made public (the rest stays optimisable)."""
from __future__ import annotations

from pathlib import Path

from rtl.runner import SRC, _verilator_visibility, top_ports


def test_ports_of_the_bundled_engine_and_units():
    ports = top_ports("gemm_engine", [SRC / "gemm_engine.v"])
    assert ports[:3] == ["clk", "rst", "mode"] and ports[-4:] == ["layer_done", "busy", "done", "cycles"]
    assert len(ports) == 26
    assert top_ports("pe_harness", [SRC / "mac_pe.v", SRC / "pe_harness.v"]) == \
        ["clk", "rst", "load", "dump", "start", "count", "done"]


def test_a_users_module_with_parameters_and_comments(tmp_path):
    src = tmp_path / "mine.v"
    src.write_text("""
// module other (input wire x);
module helper (input wire a, output wire b); assign b = a; endmodule
module my_gemm #(parameter integer R = 4, parameter integer W = (2 + 3)) (
    input  wire clk,           // the clock
    input  wire [R*W-1:0] a_bus, /* packed (rows) */
    output reg  signed [31:0] acc
);
endmodule
""")
    assert top_ports("my_gemm", [src]) == ["clk", "a_bus", "acc"]
    assert top_ports("helper", [src]) == ["a", "b"]
    assert top_ports("absent", [src]) == []


def test_unparsed_port_lists_keep_cocotbs_default(tmp_path):
    # non-ANSI ports, or several names in one declaration: the runner cannot list them safely, so it adds nothing
    # (cocotb's --public-flat-rw stays in force)
    src = tmp_path / "old.v"
    src.write_text("module old_style (clk, d, q);\n input clk, d;\n output q;\nendmodule\n"
                   "module shared (input wire a, b, output wire c);\nendmodule\n")
    assert top_ports("old_style", [src]) == [] and top_ports("shared", [src]) == []
    assert _verilator_visibility("old_style", [src], tmp_path / "build") == []


def test_visibility_config_lists_exactly_the_ports(tmp_path):
    args = _verilator_visibility("gemm_engine", [SRC / "gemm_engine.v"], tmp_path / "build")
    assert args[:2] == ["--no-public-flat-rw", "--public-params"]
    config = Path(args[2]).read_text().splitlines()
    assert config[0] == "`verilator_config" and len(config) == 27
    assert 'public_flat_rw -module "gemm_engine" -var "layer_done"' in config
