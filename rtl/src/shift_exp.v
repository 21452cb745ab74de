// Shift-based exponential (I-ViT's Shiftmax / ShiftGELU, Li & Gu, ICCV 2023), combinational: the same integers as
// hwsim.kernels.shiftexp.exp_shift. For d <= 0 holding d / 2^f:
//   t = d + (d >>> 1) - (d >>> 4)   (log2 e ~ 1.4375, floor shifts);  u = -t;  q = u >> f;  r = u - (q << f)
//   e = (2^15 - (r >> (f - 14) or r << (14 - f))) >> q, and 0 when q > 15   (2^15 e^(d / 2^f), linear 2^-frac)
// Used by softmax_unit (d = x - max) and gelu_unit (d = -|1.702 x|).
module shift_exp #(
    parameter integer D_W = 18
) (
    input  wire signed [D_W-1:0] d,
    input  wire [4:0]            f,
    output wire [15:0]           e
);
    localparam integer W = D_W + 2;
    wire signed [W-1:0] dx = {{2{d[D_W-1]}}, d};  // held signed, so >>> is an arithmetic (floor) shift
    wire signed [W-1:0] t = dx + (dx >>> 1) - (dx >>> 4);
    wire [W-1:0] u = -t;
    wire [W-1:0] q = u >> f;
    wire [W-1:0] r = u - (q << f);
    /* verilator lint_off UNUSEDSIGNAL */  // part's top bits are zero by construction (r < 2^f)
    wire [W-1:0] part = (f >= 5'd14) ? (r >> (f - 5'd14)) : (r << (5'd14 - f));
    /* verilator lint_on UNUSEDSIGNAL */
    wire [15:0] mant = 16'd32768 - part[15:0];
    assign e = (q > 15) ? 16'd0 : (mant >> q[3:0]);
endmodule
