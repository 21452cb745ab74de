// Linear from golden vectors (docs/vectors.md, "linear"): out0[r, n] = sat(sum_k (in0[r, k] << input_shift[k]) *
// weight[n, k] + bias[n]). Plain Verilog for Icarus; parameters and files come from the manifest.
`timescale 1ns / 1ps
module tb_linear;
    parameter integer ROWS = 1, K = 1, N = 1;
    parameter integer X_BITS = 8, X_SIGNED = 1, W_BITS = 8, B_BITS = 32, S_BITS = 8, O_BITS = 32, ACC_BITS = 32;
    parameter integer HAS_BIAS = 1, HAS_SHIFT = 0;
`include "vec_common.vh"
    reg [63:0] x [0:ROWS * K - 1];
    reg [63:0] w [0:N * K - 1];
    reg [63:0] b [0:N - 1];
    reg [63:0] sh [0:K - 1];
    reg [63:0] y [0:ROWS * N - 1];
    reg [1023:0] f_x, f_w, f_b, f_s, f_y;
    integer r, n, k;
    reg signed [63:0] acc, lim;
    initial begin
        if (!$value$plusargs("in0=%s", f_x) || !$value$plusargs("weight=%s", f_w) || !$value$plusargs("out0=%s", f_y))
            $fatal(1, "need +in0 +weight +out0");
        $readmemh(f_x, x);
        $readmemh(f_w, w);
        $readmemh(f_y, y);
        if (HAS_BIAS) begin
            if (!$value$plusargs("bias=%s", f_b)) $fatal(1, "need +bias");
            $readmemh(f_b, b);
        end
        if (HAS_SHIFT) begin
            if (!$value$plusargs("input_shift=%s", f_s)) $fatal(1, "need +input_shift");
            $readmemh(f_s, sh);
        end
        lim = 64'sd1 <<< (ACC_BITS - 1);
        for (r = 0; r < ROWS; r = r + 1)
            for (n = 0; n < N; n = n + 1) begin
                acc = HAS_BIAS ? sx(b[n], B_BITS, 1) : 0;
                for (k = 0; k < K; k = k + 1)
                    acc = acc + (sx(x[r * K + k], X_BITS, X_SIGNED) <<< (HAS_SHIFT ? sx(sh[k], S_BITS, 1) : 0))
                                * sx(w[n * K + k], W_BITS, 1);
                check(r * N + n, sx(y[r * N + n], O_BITS, 1), clamp(acc, -lim, lim - 1));
            end
        finish_report;
    end
endmodule
