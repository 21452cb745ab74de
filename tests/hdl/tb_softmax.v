// Softmax from golden vectors (docs/vectors.md, "softmax"): per row, e = exp_fixed(x - max x), S = sum e; MODE 0
// uniform codes, 1 log2 codes, 2 log-sqrt(2) codes.
`timescale 1ns / 1ps
module tb_softmax;
    parameter integer ROWS = 1, N = 1, X_BITS = 16, FRAC = 8, O_BITS = 4, MODE = 1;
`include "vec_common.vh"
    reg [63:0] x [0:ROWS * N - 1];
    reg [63:0] y [0:ROWS * N - 1];
    reg signed [63:0] e [0:N - 1];
    reg [1023:0] f_x, f_y;
    integer r, i, k, top;
    reg signed [63:0] mx, s, code, num, den;
    initial begin
        if (!$value$plusargs("in0=%s", f_x) || !$value$plusargs("out0=%s", f_y))
            $fatal(1, "need +in0 +out0");
        $readmemh(f_x, x);
        $readmemh(f_y, y);
        top = (1 << O_BITS) - 1;
        for (r = 0; r < ROWS; r = r + 1) begin
            mx = sx(x[r * N], X_BITS, 1);
            for (i = 1; i < N; i = i + 1)
                if (sx(x[r * N + i], X_BITS, 1) > mx) mx = sx(x[r * N + i], X_BITS, 1);
            s = 0;
            for (i = 0; i < N; i = i + 1) begin
                e[i] = exp_fixed(sx(x[r * N + i], X_BITS, 1) - mx, FRAC);
                s = s + e[i];
            end
            for (i = 0; i < N; i = i + 1) begin
                if (MODE == 0) begin
                    code = (e[i] * (((64'sd1 <<< 31) - 1) / s) + (64'sd1 <<< (30 - O_BITS))) >>> (31 - O_BITS);
                    if (code > top) code = top;
                end else if (e[i] == 0)
                    code = top;
                else begin
                    num = MODE == 1 ? s : s * s;
                    den = MODE == 1 ? e[i] : e[i] * e[i];
                    code = 0;
                    for (k = 1; k <= top; k = k + 1)
                        if (128 * num >= 181 * den * (64'sd1 <<< (k - 1))) code = code + 1;
                end
                check(r * N + i, sx(y[r * N + i], O_BITS, 0), code);
            end
        end
        finish_report;
    end
endmodule
