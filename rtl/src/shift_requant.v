// Per-column shifter requantizer with bias (docs/numerics.md rounding; P^2-ViT's shifter array):
//   acc = sat_ACC(x + bias);  y = clamp((acc + (1 << (s-1))) >>> s, qmin, qmax) for s > 0,  acc <<< -s for s <= 0.
// Round half up, arithmetic shift; hwsim.kernels.requant is the golden model. Shifts range over -16..47.
// twin_m = m > 0: a sign-region twin-uniform code (PTQ4ViT's post-GELU quantizer; hwsim.kernels.twin.requant_twin):
// acc >= 0 takes the shift s + m and the range [0, qmax], acc < 0 the shift s and [qmin, 0]; s + m stays in -16..47.
module shift_requant #(
    parameter integer ACC_W = 32,
    parameter integer OUT_W = 16
) (
    input  wire signed [ACC_W-1:0] x,
    input  wire signed [ACC_W-1:0] bias,
    input  wire signed [7:0]       shift,
    input  wire signed [OUT_W-1:0] qmin,
    input  wire signed [OUT_W-1:0] qmax,
    input  wire [3:0]              twin_m,
    output wire signed [ACC_W-1:0] acc,
    output reg  signed [OUT_W-1:0] y
);
    // Room for the rounding carry, left shifts up to 16 and the rounding constant 2^(s-1) of right shifts up to 47.
    localparam integer W = (ACC_W + 18 > 50) ? ACC_W + 18 : 50;
    wire signed [ACC_W:0] sum = {x[ACC_W-1], x} + {bias[ACC_W-1], bias};
    // The (ACC_W+1)-bit sum left the ACC_W range exactly when its two top bits differ.
    wire over = ~sum[ACC_W] & sum[ACC_W-1];
    wire under = sum[ACC_W] & ~sum[ACC_W-1];
    assign acc = over ? {1'b0, {(ACC_W-1){1'b1}}} : (under ? {1'b1, {(ACC_W-1){1'b0}}} : sum[ACC_W-1:0]);

    wire signed [W-1:0] wide = {{(W-ACC_W){acc[ACC_W-1]}}, acc};
    wire twin = twin_m != 4'd0;
    wire coarse = twin && !acc[ACC_W-1];  // the twin code's coarse region: x >= 0
    wire signed [7:0] s = coarse ? shift + {4'd0, twin_m} : shift;
    wire [5:0] rshift = s[5:0];
    wire [4:0] lshift = 5'd0 - s[4:0];
    wire signed [W-1:0] half = (s > 0) ? ({{(W-1){1'b0}}, 1'b1} <<< (rshift - 6'd1)) : {W{1'b0}};
    wire signed [W-1:0] shifted = (s > 0) ? ((wide + half) >>> rshift) : (wide <<< lshift);
    wire signed [OUT_W-1:0] q_lo = coarse ? {OUT_W{1'b0}} : qmin;
    wire signed [OUT_W-1:0] q_hi = (twin && !coarse) ? {OUT_W{1'b0}} : qmax;
    wire signed [W-1:0] lo = {{(W-OUT_W){q_lo[OUT_W-1]}}, q_lo};
    wire signed [W-1:0] hi = {{(W-OUT_W){q_hi[OUT_W-1]}}, q_hi};

    always @(*) begin : saturate
        if (shifted > hi)      y = q_hi;
        else if (shifted < lo) y = q_lo;
        else                   y = shifted[OUT_W-1:0];
    end
endmodule
