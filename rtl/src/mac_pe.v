// Multi-precision MAC processing element, output-stationary (P^2-ViT, Shi et al., IEEE TVLSI 2024: PoT multiply-
// accumulate with shifts). Per clock, when en:
//   mode 0 (int8):   acc += (a * b) << sh[1:0]; with TWIN, << sh[3:0] (a twin-uniform code's magnitude times
//                    2^m or 1, PTQ4ViT / MPTQ-ViT: the engine decodes the region at the array edge into a and sh)
//   mode 1 (2xint4): acc += (a[3:0] * b[3:0]) << sh[1:0] + (a[7:4] * b[7:4]) << sh[3:2]   (two MACs per cycle)
//   mode 2 (log2):   acc += code > LOG_TOP ? 0 : b << (LOG_TOP - code), code = a[3:0]      (log2 softmax x V)
//   mode 3 (log-sqrt2): acc += code > LOG_TOP ? 0 : (b * (code odd ? 181 : 128)) << (LOG_TOP / 2 - ceil(code / 2))
//                    (RepQ-ViT's log-sqrt(2) softmax x V; 181 = 10110101b as four shift-adds, sqrt(2) ~ 181/128)
// sh is FQ-ViT's power-of-two factor (PTF) of the reduction index, applied to the product. Operands are signed;
// a and sh move right, b moves down, one register per PE. Widths follow docs/numerics.md.
module mac_pe #(
    parameter integer A_W = 8,
    parameter integer B_W = 8,
    parameter integer ACC_W = 32,
    parameter integer LOG_TOP = 14,
    parameter integer INT4X2 = 1,  // the PE has the packed 2 x int4 mode (area: two 4 x 4 multipliers)
    parameter integer LOG2 = 1,    // the PE has the log2 mode (area: a barrel shifter); a missing mode adds nothing
    parameter integer LOG_SQRT2 = 1, // the PE has the log-sqrt2 mode (area: four adders and a second shifter)
    parameter integer TWIN = 1       // the int8 product shifter takes 0..15 (twin codes), else 0..3 (PTF only)
) (
    input  wire                    clk,
    input  wire                    clear,
    input  wire                    en,
    input  wire [1:0]              mode,
    input  wire signed [A_W-1:0]   a_in,
    input  wire signed [B_W-1:0]   b_in,
    input  wire [3:0]              sh_in,
    output reg  signed [A_W-1:0]   a_out,
    output reg  signed [B_W-1:0]   b_out,
    output reg  [3:0]              sh_out,
    output reg  signed [ACC_W-1:0] acc
);
    // Only the active mode's product is computed, at its natural width (an event-driven simulator then evaluates
    // one narrow multiply per cycle instead of three 32-bit ones).
    localparam integer P_W = A_W + B_W;
    wire [3:0] code = a_in[3:0];
    wire [3:0] log_shift = LOG_TOP[3:0] - code;
    wire [4:0] half_up = ({1'b0, code} + 5'd1) >> 1;           // ceil(code / 2)
    wire [4:0] sqrt2_shift = LOG_TOP[5:1] - half_up;            // LOG_TOP / 2 - ceil(code / 2), >= 0 below the zero code
    wire signed [ACC_W-1:0] b_wide = {{(ACC_W-B_W){b_in[B_W-1]}}, b_in};
    wire signed [ACC_W-1:0] b_mant = code[0] ? (b_wide <<< 7) + (b_wide <<< 5) + (b_wide <<< 4) + (b_wide <<< 2) + b_wide
                                             : (b_wide <<< 7);
    reg signed [P_W-1:0] p_full;
    reg signed [7:0]     p_lo, p_hi;
    reg signed [ACC_W-1:0] product;
    always @(*) begin : select_product
        p_full = {P_W{1'b0}};
        p_lo = 8'sd0;
        p_hi = 8'sd0;
        product = {ACC_W{1'b0}};  // a mode the PE lacks contributes nothing (and infers no latch)
        case (mode)
            2'd1: if (INT4X2 != 0) begin
                p_lo = $signed(a_in[3:0]) * $signed(b_in[3:0]);
                p_hi = $signed(a_in[7:4]) * $signed(b_in[7:4]);
                product = ({{(ACC_W-8){p_lo[7]}}, p_lo} <<< sh_in[1:0]) + ({{(ACC_W-8){p_hi[7]}}, p_hi} <<< sh_in[3:2]);
            end
            2'd2: if (LOG2 != 0) product = (code > LOG_TOP[3:0]) ? {ACC_W{1'b0}} : (b_wide <<< log_shift);
            2'd3: if (LOG_SQRT2 != 0) product = (code > LOG_TOP[3:0]) ? {ACC_W{1'b0}} : (b_mant <<< sqrt2_shift);
            default: begin
                p_full = a_in * b_in;
                product = {{(ACC_W-P_W){p_full[P_W-1]}}, p_full} <<< (TWIN != 0 ? sh_in : {2'b00, sh_in[1:0]});
            end
        endcase
    end

    always @(posedge clk) begin : accumulate
        if (clear) begin
            acc    <= {ACC_W{1'b0}};
            a_out  <= {A_W{1'b0}};
            b_out  <= {B_W{1'b0}};
            sh_out <= 4'd0;
        end else if (en) begin
            acc    <= acc + product;
            a_out  <= a_in;
            b_out  <= b_in;
            sh_out <= sh_in;
        end
    end
endmodule
