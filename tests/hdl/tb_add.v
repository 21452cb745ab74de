// Add from golden vectors (docs/vectors.md, "add"): out0 = clamp(rs(in0, SHIFT_A) +- rs(in1, SHIFT_B)).
`timescale 1ns / 1ps
module tb_add;
    parameter integer TOTAL = 1, A_BITS = 16, B_BITS = 16, O_BITS = 16, SHIFT_A = 0, SHIFT_B = 0, SUBTRACT = 0;
    parameter integer QMIN = -32768, QMAX = 32767;
`include "vec_common.vh"
    reg [63:0] a [0:TOTAL - 1];
    reg [63:0] b [0:TOTAL - 1];
    reg [63:0] y [0:TOTAL - 1];
    reg [1023:0] f_a, f_b, f_y;
    integer i;
    reg signed [63:0] right;
    initial begin
        if (!$value$plusargs("in0=%s", f_a) || !$value$plusargs("in1=%s", f_b) || !$value$plusargs("out0=%s", f_y))
            $fatal(1, "need +in0 +in1 +out0");
        $readmemh(f_a, a);
        $readmemh(f_b, b);
        $readmemh(f_y, y);
        for (i = 0; i < TOTAL; i = i + 1) begin
            right = rs(sx(b[i], B_BITS, 1), SHIFT_B);
            check(i, sx(y[i], O_BITS, 1), clamp(rs(sx(a[i], A_BITS, 1), SHIFT_A) + (SUBTRACT ? -right : right), QMIN, QMAX));
        end
        finish_report;
    end
endmodule
