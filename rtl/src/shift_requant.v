// Per-column shifter requantizer with bias (docs/numerics.md rounding; P^2-ViT's shifter array):
//   acc = sat_ACC(x + bias);  y = clamp((acc + (1 << (s-1))) >>> s, qmin, qmax) for s > 0,  acc <<< -s for s <= 0.
// Round half up, arithmetic shift; hwsim.kernels.requant is the golden model. Shifts range over -16..47.
module shift_requant #(
    parameter integer ACC_W = 32,
    parameter integer OUT_W = 16
) (
    input  wire signed [ACC_W-1:0] x,
    input  wire signed [ACC_W-1:0] bias,
    input  wire signed [7:0]       shift,
    input  wire signed [OUT_W-1:0] qmin,
    input  wire signed [OUT_W-1:0] qmax,
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
    wire [5:0] rshift = shift[5:0];
    wire [4:0] lshift = 5'd0 - shift[4:0];
    wire signed [W-1:0] half = (shift > 0) ? ({{(W-1){1'b0}}, 1'b1} <<< (rshift - 6'd1)) : {W{1'b0}};
    wire signed [W-1:0] shifted = (shift > 0) ? ((wide + half) >>> rshift) : (wide <<< lshift);
    wire signed [W-1:0] lo = {{(W-OUT_W){qmin[OUT_W-1]}}, qmin};
    wire signed [W-1:0] hi = {{(W-OUT_W){qmax[OUT_W-1]}}, qmax};

    always @(*) begin : saturate
        if (shifted > hi)      y = qmax;
        else if (shifted < lo) y = qmin;
        else                   y = shifted[OUT_W-1:0];
    end
endmodule
