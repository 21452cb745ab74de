// LayerNorm from golden vectors (docs/vectors.md, "layernorm"), F = 8 fraction bits of the mean.
`timescale 1ns / 1ps
module tb_layernorm;
    parameter integer ROWS = 1, C = 1, X_BITS = 16, G_BITS = 16, BETA_BITS = 64, S_BITS = 8, O_BITS = 8;
    parameter integer QMIN = -128, QMAX = 127;
    localparam integer F = 8;
`include "vec_common.vh"
    reg [63:0] x [0:ROWS * C - 1];
    reg [63:0] y [0:ROWS * C - 1];
    reg [63:0] g [0:C - 1];
    reg [63:0] be [0:C - 1];
    reg [63:0] sh [0:C - 1];
    reg [1023:0] f_x, f_g, f_b, f_s, f_y;
    integer r, c;
    reg signed [63:0] sum, mu, d, k, acc;
    reg [63:0] var_, sd;
    initial begin
        if (!$value$plusargs("in0=%s", f_x) || !$value$plusargs("gamma=%s", f_g) || !$value$plusargs("beta=%s", f_b)
            || !$value$plusargs("shift=%s", f_s) || !$value$plusargs("out0=%s", f_y))
            $fatal(1, "need +in0 +gamma +beta +shift +out0");
        $readmemh(f_x, x);
        $readmemh(f_g, g);
        $readmemh(f_b, be);
        $readmemh(f_s, sh);
        $readmemh(f_y, y);
        for (r = 0; r < ROWS; r = r + 1) begin
            sum = 0;
            for (c = 0; c < C; c = c + 1)
                sum = sum + sx(x[r * C + c], X_BITS, 1);
            mu = fdiv(sum * (64'sd1 <<< (F + 1)) + C, 2 * C);
            var_ = 0;
            for (c = 0; c < C; c = c + 1) begin
                d = sx(x[r * C + c], X_BITS, 1) * (64'sd1 <<< F) - mu;
                var_ = var_ + d * d;
            end
            sd = isqrt(var_);
            if (sd == 0) sd = 1;
            k = (64'sd1 <<< (31 + F)) / $signed(sd);
            for (c = 0; c < C; c = c + 1) begin
                d = sx(x[r * C + c], X_BITS, 1) * (64'sd1 <<< F) - mu;
                acc = d * k * sx(g[c], G_BITS, 1) + sx(be[c], BETA_BITS, 1);
                check(r * C + c, sx(y[r * C + c], O_BITS, 1), clamp(rs(acc, sx(sh[c], S_BITS, 1)), QMIN, QMAX));
            end
        end
        finish_report;
    end
endmodule
