// A weight-stationary GEMM engine, written for the tests only (never part of vitsim's RTL): a second array
// organisation behind rtl/src/gemm_engine.v's port protocol (docs/rtl_protocol.md), for `vitsim verify --rtl ...
// --own-schedule`. Integer operand modes only (mode 0 int8, mode 1 int4 pairs computed as plain products; PTF input
// shifts); log2 codes and twin-uniform codes are not implemented.
//
// Per output tile (R rows x C columns, row-major over the layer), for each chunk of R reduction steps:
//   1 cycle  W: PE (r, c) latches the stationary weight B[n0 + c][k0 + r];
//   R cycles S: one output row a cycle enters, its R activations broadcast along the array's rows; each column sums
//               its R products and adds them to that row's partial sum;
// then R cycles Q: one tile row a cycle is requantized and written, and 1 cycle D ends the tile. A tile takes
// ceil(K / R) * (R + 1) + R + 1 cycles (its own schedule, not the reference engine's).
module ws_gemm #(
    parameter integer R = 8,
    parameter integer C = 8,
    parameter integer A_W = 8,
    parameter integer B_W = 8,
    parameter integer ACC_W = 32,
    parameter integer OUT_W = 16,
    parameter integer ADDR_W = 18
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire [1:0]              mode,
    input  wire [15:0]             m_total,
    input  wire [15:0]             n_total,
    input  wire [15:0]             k_total,
    input  wire [15:0]             m0,
    input  wire [15:0]             n0,
    input  wire signed [OUT_W-1:0] qmin,
    input  wire signed [OUT_W-1:0] qmax,
    input  wire [3:0]              twin_m,
    input  wire                    twin_sign,
    input  wire [3:0]              twin_bits,
    input  wire [3:0]              out_twin_m,
    input  wire                    wr_en,
    input  wire [2:0]              wr_sel,
    input  wire [ADDR_W-1:0]       wr_addr,
    input  wire [31:0]             wr_data,
    input  wire                    load,
    input  wire                    dump,
    input  wire                    start,
    input  wire                    run_layer,
    output reg                     layer_done,
    output wire                    busy,
    output reg                     done,
    output reg  [31:0]             cycles
);
    localparam [2:0] S_IDLE = 3'd0, S_W = 3'd1, S_S = 3'd2, S_Q = 3'd3, S_D = 3'd4;
    localparam integer DEPTH = 1 << ADDR_W;

    reg [A_W-1:0]   a_mem     [0:DEPTH-1];
    reg [B_W-1:0]   b_mem     [0:DEPTH-1];
    reg [ACC_W-1:0] bias_mem  [0:DEPTH-1];
    reg [7:0]       shift_mem [0:DEPTH-1];
    reg [1:0]       ptf_mem   [0:DEPTH-1];
    reg [OUT_W-1:0] out_mem   [0:DEPTH-1];
    reg [ACC_W-1:0] acc_mem   [0:DEPTH-1];
    reg [31:0]      tile_mem  [0:DEPTH-1];

    reg signed [B_W-1:0]  w    [0:R-1][0:C-1];   // the stationary weights
    reg signed [63:0]     psum [0:R-1][0:C-1];   // per tile row and column, across the K chunks

    reg [2:0]  state;
    reg [31:0] i_row, k0, tile_count;
    reg [15:0] tm0, tn0;
    reg        layer_mode;
    assign busy = (state != S_IDLE);

    wire [31:0] m32 = {16'd0, m_total};
    wire [31:0] n32 = {16'd0, n_total};
    wire [31:0] k32 = {16'd0, k_total};
    wire [31:0] tm32 = {16'd0, tm0};
    wire [31:0] tn32 = {16'd0, tn0};

    always @(posedge clk) begin : buffer_write
        if (wr_en) begin
            case (wr_sel)
                3'd0: a_mem[wr_addr]     <= wr_data[A_W-1:0];
                3'd1: b_mem[wr_addr]     <= wr_data[B_W-1:0];
                3'd2: bias_mem[wr_addr]  <= wr_data[ACC_W-1:0];
                3'd3: shift_mem[wr_addr] <= wr_data[7:0];
                default: ptf_mem[wr_addr] <= wr_data[1:0];
            endcase
        end
    end

`ifndef SYNTHESIS
    always @(posedge clk) begin : sim_files
        if (load) begin
            $readmemh("a.hex", a_mem);
            $readmemh("b.hex", b_mem);
            $readmemh("bias.hex", bias_mem);
            $readmemh("shift.hex", shift_mem);
            $readmemh("ptf.hex", ptf_mem);
        end
        if (dump) begin
            $writememh("out.hex", out_mem, 0, m_total * n_total - 1);
            $writememh("acc.hex", acc_mem, 0, m_total * n_total - 1);
            $writememh("tiles.hex", tile_mem, 0, tile_count - 1);
        end
    end
`endif

    // round-half-up shift (s > 0) or left shift (s <= 0), then the output clamp
    function signed [OUT_W-1:0] requant(input signed [63:0] x, input signed [7:0] s);
        reg signed [63:0] v, lo, hi;
        begin
            lo = {{(64 - OUT_W){qmin[OUT_W-1]}}, qmin};
            hi = {{(64 - OUT_W){qmax[OUT_W-1]}}, qmax};
            if (s > 0)
                v = (x + (64'sd1 <<< (s - 8'sd1))) >>> s;
            else
                v = x <<< (-s);
            if (v < lo) v = lo;
            if (v > hi) v = hi;
            requant = v[OUT_W-1:0];
        end
    endfunction

    integer r, c;
    reg signed [63:0] prod, total;
    reg [31:0] m, n, k;
    always @(posedge clk) begin
        done <= 1'b0;
        layer_done <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            tile_count <= 32'd0;
            cycles <= 32'd0;
        end else begin
            if (state != S_IDLE) cycles <= cycles + 32'd1;
            case (state)
                S_IDLE: if (start || run_layer) begin
                    layer_mode <= run_layer;
                    tm0 <= run_layer ? 16'd0 : m0;
                    tn0 <= run_layer ? 16'd0 : n0;
                    if (run_layer) tile_count <= 32'd0;
                    k0 <= 32'd0;
                    cycles <= 32'd0;
                    for (r = 0; r < R; r = r + 1)
                        for (c = 0; c < C; c = c + 1) psum[r][c] <= 64'sd0;
                    state <= S_W;
                end
                S_W: begin
                    for (r = 0; r < R; r = r + 1)
                        for (c = 0; c < C; c = c + 1) begin
                            n = tn32 + c;
                            k = k0 + r;
                            w[r][c] <= (n < n32 && k < k32) ? b_mem[n * k32 + k] : {B_W{1'b0}};
                        end
                    i_row <= 32'd0;
                    state <= S_S;
                end
                S_S: begin
                    m = tm32 + i_row;
                    for (c = 0; c < C; c = c + 1) begin
                        total = 64'sd0;
                        for (r = 0; r < R; r = r + 1) begin
                            k = k0 + r;
                            if (m < m32 && k < k32) begin
                                prod = $signed(a_mem[m * k32 + k]) * w[r][c];
                                total = total + (prod <<< ptf_mem[k]);
                            end
                        end
                        psum[i_row][c] <= psum[i_row][c] + total;
                    end
                    if (i_row == R - 1) begin
                        i_row <= 32'd0;
                        if (k0 + R < k32) begin
                            k0 <= k0 + R;
                            state <= S_W;
                        end else
                            state <= S_Q;
                    end else
                        i_row <= i_row + 32'd1;
                end
                S_Q: begin
                    m = tm32 + i_row;
                    for (c = 0; c < C; c = c + 1) begin
                        n = tn32 + c;
                        if (m < m32 && n < n32) begin
                            total = psum[i_row][c] + $signed({{(64 - ACC_W){bias_mem[n][ACC_W-1]}}, bias_mem[n]});
                            acc_mem[m * n32 + n] <= total[ACC_W-1:0];
                            out_mem[m * n32 + n] <= requant(total, $signed(shift_mem[n]));
                        end
                    end
                    if (i_row == R - 1) state <= S_D;
                    else i_row <= i_row + 32'd1;
                end
                S_D: begin
                    tile_mem[tile_count] <= cycles + 32'd1;
                    tile_count <= tile_count + 32'd1;
                    done <= 1'b1;
                    k0 <= 32'd0;
                    for (r = 0; r < R; r = r + 1)
                        for (c = 0; c < C; c = c + 1) psum[r][c] <= 64'sd0;
                    if (layer_mode && !(tn32 + C >= n32 && tm32 + R >= m32)) begin
                        if (tn32 + C >= n32) begin
                            tn0 <= 16'd0;
                            tm0 <= tm0 + R[15:0];
                        end else
                            tn0 <= tn0 + C[15:0];
                        cycles <= 32'd0;
                        state <= S_W;
                    end else begin
                        layer_done <= layer_mode;
                        state <= S_IDLE;
                    end
                end
                default: state <= S_IDLE;
            endcase
        end
    end
endmodule
