// MatMul from golden vectors (docs/vectors.md, "matmul"), per head h: out0[h, m, n] = sat(sum_k A[h, m, k] *
// B[h, k, n]); B = in1[h, n, k] when TRANSPOSE_B, else in1[h, k, n]; with LOG2_BITS = b, A's codes c decode to
// 2^(2^b - 2 - c) and the top code to 0.
`timescale 1ns / 1ps
module tb_matmul;
    parameter integer HEADS = 1, M = 1, K = 1, N = 1, TRANSPOSE_B = 0, LOG2_BITS = 0;
    parameter integer A_BITS = 8, A_SIGNED = 1, B_BITS = 8, O_BITS = 32, ACC_BITS = 32;
`include "vec_common.vh"
    reg [63:0] a [0:HEADS * M * K - 1];
    reg [63:0] b [0:HEADS * K * N - 1];
    reg [63:0] y [0:HEADS * M * N - 1];
    reg [1023:0] f_a, f_b, f_y;
    integer h, m, n, k, top;
    reg signed [63:0] acc, av, bv, lim;
    initial begin
        if (!$value$plusargs("in0=%s", f_a) || !$value$plusargs("in1=%s", f_b) || !$value$plusargs("out0=%s", f_y))
            $fatal(1, "need +in0 +in1 +out0");
        $readmemh(f_a, a);
        $readmemh(f_b, b);
        $readmemh(f_y, y);
        lim = 64'sd1 <<< (ACC_BITS - 1);
        top = (1 << LOG2_BITS) - 2;
        for (h = 0; h < HEADS; h = h + 1)
            for (m = 0; m < M; m = m + 1)
                for (n = 0; n < N; n = n + 1) begin
                    acc = 0;
                    for (k = 0; k < K; k = k + 1) begin
                        av = sx(a[(h * M + m) * K + k], A_BITS, A_SIGNED);
                        if (LOG2_BITS != 0)
                            av = (av == top + 1) ? 0 : (64'sd1 <<< (av < top ? top - av : 0));
                        bv = TRANSPOSE_B ? sx(b[(h * N + n) * K + k], B_BITS, 1) : sx(b[(h * K + k) * N + n], B_BITS, 1);
                        acc = acc + av * bv;
                    end
                    check((h * M + m) * N + n, sx(y[(h * M + m) * N + n], O_BITS, 1), clamp(acc, -lim, lim - 1));
                end
        finish_report;
    end
endmodule
