// GELU from golden vectors (docs/vectors.md, "gelu"): z = x + x div 2 + x div 8 + x div 16, e = exp_fixed(-|z|),
// sp = 2^(15 + SIG) div (2^15 + e), out0 = x * (sp if z >= 0 else 2^SIG - sp).
`timescale 1ns / 1ps
module tb_gelu;
    parameter integer TOTAL = 1, X_BITS = 16, FRAC = 8, SIG = 8, O_BITS = 32;
`include "vec_common.vh"
    reg [63:0] x [0:TOTAL - 1];
    reg [63:0] y [0:TOTAL - 1];
    reg [1023:0] f_x, f_y;
    integer i;
    reg signed [63:0] v, z, e, sp;
    initial begin
        if (!$value$plusargs("in0=%s", f_x) || !$value$plusargs("out0=%s", f_y))
            $fatal(1, "need +in0 +out0");
        $readmemh(f_x, x);
        $readmemh(f_y, y);
        for (i = 0; i < TOTAL; i = i + 1) begin
            v = sx(x[i], X_BITS, 1);
            z = v + fdiv(v, 2) + fdiv(v, 8) + fdiv(v, 16);
            e = exp_fixed(z < 0 ? z : -z, FRAC);
            sp = (64'sd1 <<< (15 + SIG)) / ((64'sd1 <<< 15) + e);
            check(i, sx(y[i], O_BITS, 1), v * (z >= 0 ? sp : (64'sd1 <<< SIG) - sp));
        end
        finish_report;
    end
endmodule
