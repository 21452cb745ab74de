// Requant from golden vectors (docs/vectors.md, "requant"): out0 = clamp(rs(in0, shift[c]) + zero_point), or the
// dyadic form with multiplier[c]; c = (index / INNER) % C, the channel along the op's axis.
`timescale 1ns / 1ps
module tb_requant;
    parameter integer TOTAL = 1, C = 1, INNER = 1, DYADIC = 0;
    parameter integer X_BITS = 32, S_BITS = 8, M_BITS = 32, O_BITS = 8, O_SIGNED = 1, ZERO_POINT = 0;
    parameter integer QMIN = -128, QMAX = 127;
`include "vec_common.vh"
    reg [63:0] x [0:TOTAL - 1];
    reg [63:0] y [0:TOTAL - 1];
    reg [63:0] sh [0:C - 1];
    reg [63:0] mul [0:C - 1];
    reg [1023:0] f_x, f_s, f_m, f_y;
    integer i, c;
    reg signed [63:0] v, s;
    initial begin
        if (!$value$plusargs("in0=%s", f_x) || !$value$plusargs("shift=%s", f_s) || !$value$plusargs("out0=%s", f_y))
            $fatal(1, "need +in0 +shift +out0");
        $readmemh(f_x, x);
        $readmemh(f_s, sh);
        $readmemh(f_y, y);
        if (DYADIC) begin
            if (!$value$plusargs("multiplier=%s", f_m)) $fatal(1, "need +multiplier");
            $readmemh(f_m, mul);
        end
        for (i = 0; i < TOTAL; i = i + 1) begin
            c = (i / INNER) % C;
            s = sx(sh[c], S_BITS, 1);
            v = sx(x[i], X_BITS, 1);
            if (DYADIC)
                v = (v * sx(mul[c], M_BITS, 1) + (64'sd1 <<< (s - 1))) >>> s;
            else
                v = rs(v, s);
            check(i, sx(y[i], O_BITS, O_SIGNED), clamp(v + ZERO_POINT, QMIN, QMAX));
        end
        finish_report;
    end
endmodule
