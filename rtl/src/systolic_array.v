// R x C output-stationary systolic array of mac_pe (Kung & Leiserson's systolic arrays; output-stationary dataflow as
// in P^2-ViT's PE array). Row i receives its A operand (and PTF shift) at the left edge, column j its B operand at the
// top; the feeder skews them so PE (i, j) meets reduction index k at cycle k + i + j. Accumulators are read one row
// at a time: with `capture`, row `row_sel` is registered into row_acc (column j at bits [j*ACC_W +: ACC_W]). A
// registered row port, rather than a bus of all R*C accumulators, keeps event-driven simulators from re-evaluating
// every reader on each PE update.
module systolic_array #(
    parameter integer R = 8,
    parameter integer C = 8,
    parameter integer A_W = 8,
    parameter integer B_W = 8,
    parameter integer ACC_W = 32
) (
    input  wire                   clk,
    input  wire                   clear,
    input  wire                   en,
    input  wire [1:0]             mode,
    input  wire [R*A_W-1:0]       a_rows,
    input  wire [R*4-1:0]         sh_rows,
    input  wire [C*B_W-1:0]       b_cols,
    input  wire                   capture,
    input  wire [7:0]             row_sel,
    output reg  [C*ACC_W-1:0]     row_acc
);
    // Horizontal (a, sh) and vertical (b) links; column C and row R ends are unused outputs of the last PEs.
    wire [A_W-1:0] a_link  [0:R*(C+1)-1];
    wire [3:0]     sh_link [0:R*(C+1)-1];
    wire [B_W-1:0] b_link  [0:(R+1)*C-1];
    wire [ACC_W-1:0] acc_arr [0:R*C-1];

    genvar i, j;
    generate
        for (i = 0; i < R; i = i + 1) begin : g_row_in
            assign a_link[i*(C+1)]  = a_rows[i*A_W +: A_W];
            assign sh_link[i*(C+1)] = sh_rows[i*4 +: 4];
        end
        for (j = 0; j < C; j = j + 1) begin : g_col_in
            assign b_link[j] = b_cols[j*B_W +: B_W];
        end
        for (i = 0; i < R; i = i + 1) begin : g_row
            for (j = 0; j < C; j = j + 1) begin : g_col
                wire signed [ACC_W-1:0] acc;
                mac_pe #(.A_W(A_W), .B_W(B_W), .ACC_W(ACC_W)) pe (
                    .clk(clk), .clear(clear), .en(en), .mode(mode),
                    .a_in(a_link[i*(C+1)+j]), .b_in(b_link[i*C+j]), .sh_in(sh_link[i*(C+1)+j]),
                    .a_out(a_link[i*(C+1)+j+1]), .b_out(b_link[(i+1)*C+j]), .sh_out(sh_link[i*(C+1)+j+1]),
                    .acc(acc));
                assign acc_arr[i*C+j] = acc;
            end
        end
    endgenerate

    integer c;
    always @(posedge clk) begin : read_row
        if (capture)
            for (c = 0; c < C; c = c + 1)
                row_acc[c*ACC_W +: ACC_W] <= acc_arr[row_sel * C + c];
    end
endmodule
