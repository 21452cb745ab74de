// GEMM tile engine: buffers + skewed feeder + R x C systolic_array + one shift_requant per column.
// The testbench fills the buffers (write port, or $readmemh of a.hex/b.hex/bias.hex/shift.hex/ptf.hex on `load` in
// simulation) and sets the layer sizes. `start` runs the one tile at (m0, n0); `run_layer` runs every tile of the
// layer in row-major order, back to back, recording each tile's cycle count in a buffer (tiles.hex on `dump`). A tile
// computes
//   out[m][n] = requant(sum_k A[m][k] * B[n][k] (+PTF, packed int4 or log2 per `mode`) + bias[n], shift[n])
// for m0 <= m < m0+R, n0 <= n < n0+C autonomously and pulses `done`. Buffers: A[m*K + k], B[n*K + k], out[m*N + n].
// Schedule (the cycle model hwsim.cost.cycles reproduces): 1 clear cycle, K_steps + R + C - 2 feed cycles (PE (i, j)
// meets reduction step k at cycle k + i + j), then R + 1 requant cycles: each latches one tile row of accumulators
// into the C column shifters and writes the row latched the cycle before:
// and 1 done cycle:  cycles = K_steps + 2R + C + 1,  K_steps = ceil(K / 2) in mode 1 (two int4 MACs per PE), else K.
// Twin-uniform A codes (PTQ4ViT, MPTQ-ViT; hwsim.kernels.twin) run in mode 0 with `twin_m` = m > 0: the feeder decodes
// each code's region at the array's west edge into a magnitude and the PE's product shift (m or 0), in place of the
// PTF shift: flag codes (`twin_sign` 0, `twin_bits`-bit unsigned: the top bit flags the coarse region, and is cleared)
// or sign codes (`twin_sign` 1: c >= 0 is coarse). Same cycles as int8. `out_twin_m` > 0 makes the column
// requantizers emit sign-region twin codes (rtl/src/shift_requant.v).
module gemm_engine #(
    parameter integer R = 8,
    parameter integer C = 8,
    parameter integer A_W = 8,
    parameter integer B_W = 8,
    parameter integer ACC_W = 32,
    parameter integer OUT_W = 16,
    parameter integer ADDR_W = 18       // every buffer holds 2^ADDR_W entries
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
    input  wire [2:0]              wr_sel,   // 0 A, 1 B, 2 bias, 3 shift, 4 ptf
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
    localparam [2:0] S_IDLE = 3'd0, S_CLEAR = 3'd1, S_FEED = 3'd2, S_REQ = 3'd3, S_DONE = 3'd4;

    localparam integer DEPTH = 1 << ADDR_W;
    reg [A_W-1:0]   a_mem     [0:DEPTH-1];
    reg [B_W-1:0]   b_mem     [0:DEPTH-1];
    reg [ACC_W-1:0] bias_mem  [0:DEPTH-1];
    reg [7:0]       shift_mem [0:DEPTH-1];
    reg [1:0]       ptf_mem   [0:DEPTH-1];
    reg [OUT_W-1:0] out_mem   [0:DEPTH-1];
    reg [ACC_W-1:0] acc_mem   [0:DEPTH-1];
    reg [31:0]      tile_mem  [0:DEPTH-1];  // cycles of each tile of the last run_layer

    reg [2:0]  state;
    reg [31:0] t;
    assign busy = (state != S_IDLE);

    // The layer's configuration, sampled when a run starts (start or run_layer in S_IDLE): the datapath then depends
    // on registers only, never combinationally on a top-level input. (Verilator re-evaluates all logic fed by an
    // input whenever any input changes, the clock included: the 256 PEs' product logic twice per cycle otherwise.)
    reg [1:0]              cfg_mode;
    reg [15:0]             cfg_m, cfg_n, cfg_k;
    reg signed [OUT_W-1:0] cfg_qmin, cfg_qmax;
    reg [3:0]              cfg_twin_m, cfg_twin_bits, cfg_out_twin_m;
    reg                    cfg_twin_sign;

    // Tile sequencing: the origin of the tile being run, and of the next one in a layer run.
    reg [15:0] tm0, tn0;
    reg layer_mode;
    reg [31:0] tile_count;
    wire last_col = {16'd0, tn0} + C >= {16'd0, cfg_n};
    wire more_tiles = !(last_col && {16'd0, tm0} + R >= {16'd0, cfg_m});
    wire [15:0] next_m0 = (state == S_IDLE) ? (run_layer ? 16'd0 : m0) : (last_col ? tm0 + R[15:0] : tm0);
    wire [15:0] next_n0 = (state == S_IDLE) ? (run_layer ? 16'd0 : n0) : (last_col ? 16'd0 : tn0 + C[15:0]);
    wire begin_tile = (state == S_IDLE && (start || run_layer)) || (state == S_DONE && layer_mode && more_tiles);

    wire [31:0] k_steps = (cfg_mode == 2'd1) ? ({16'd0, cfg_k} + 32'd1) >> 1 : {16'd0, cfg_k};
    wire [31:0] feed_last = k_steps + R + C - 3;

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

    // Skewed feeder, registered: at each clock edge it reads the buffers for the next feed step `nt`, so the clear
    // cycle doubles as the first prefetch. Row i carries step nt - i of output row m0 + i, column j step nt - j of
    // column n0 + j; out-of-range steps, rows and columns feed zeros.
    reg [R*A_W-1:0] a_rows;
    reg [R*4-1:0]   sh_rows;
    reg [C*B_W-1:0] b_cols;
    wire feeding = (state == S_CLEAR) || (state == S_FEED);
    wire [31:0] nt = (state == S_CLEAR) ? 32'd0 : t + 32'd1;
    wire [31:0] k32 = {16'd0, cfg_k};
    integer i, j;
    reg [31:0] a_base [0:R-1];  // (m0 + i) * K, latched at start so the feeder only adds
    reg [31:0] b_base [0:C-1];
    always @(posedge clk) begin : tile_bases
        if (begin_tile) begin
            for (i = 0; i < R; i = i + 1) a_base[i] <= ({16'd0, next_m0} + i) * {16'd0, k_total};
            for (j = 0; j < C; j = j + 1) b_base[j] <= ({16'd0, next_n0} + j) * {16'd0, k_total};
        end
    end
    // Twin decode of an A code at the west edge: (magnitude, product shift).
    function [A_W+3:0] twin_edge;
        input [A_W-1:0] code;
        reg [A_W-1:0] flag_bit;
        reg coarse;
        begin
            flag_bit = {{(A_W-1){1'b0}}, 1'b1} << (cfg_twin_bits - 4'd1);
            coarse = cfg_twin_sign ? !code[A_W-1] : ((code & flag_bit) != {A_W{1'b0}});
            twin_edge = {coarse ? cfg_twin_m : 4'd0, cfg_twin_sign ? code : (code & ~flag_bit)};
        end
    endfunction
    wire twin = cfg_twin_m != 4'd0;
    always @(posedge clk) begin : feeder
        for (i = 0; i < R; i = i + 1) begin
            if (feeding && nt >= i && nt - i < k_steps && {16'd0, tm0} + i < {16'd0, cfg_m}) begin
                if (cfg_mode == 2'd1) begin
                    a_rows[i*A_W +: 4] <= a_mem[a_base[i] + 2 * (nt - i)][3:0];
                    a_rows[i*A_W+4 +: 4] <= (2 * (nt - i) + 1 < k32) ? a_mem[a_base[i] + 2 * (nt - i) + 1][3:0] : 4'd0;
                    sh_rows[i*4 +: 2] <= ptf_mem[2 * (nt - i)];
                    sh_rows[i*4+2 +: 2] <= (2 * (nt - i) + 1 < k32) ? ptf_mem[2 * (nt - i) + 1] : 2'd0;
                end else if (twin) begin
                    {sh_rows[i*4 +: 4], a_rows[i*A_W +: A_W]} <= twin_edge(a_mem[a_base[i] + (nt - i)]);
                end else begin
                    a_rows[i*A_W +: A_W] <= a_mem[a_base[i] + (nt - i)];
                    sh_rows[i*4 +: 4] <= {2'b00, ptf_mem[nt - i]};
                end
            end else begin
                a_rows[i*A_W +: A_W] <= {A_W{1'b0}};
                sh_rows[i*4 +: 4] <= 4'd0;
            end
        end
        for (j = 0; j < C; j = j + 1) begin
            if (feeding && nt >= j && nt - j < k_steps && {16'd0, tn0} + j < {16'd0, cfg_n}) begin
                if (cfg_mode == 2'd1) begin
                    b_cols[j*B_W +: 4] <= b_mem[b_base[j] + 2 * (nt - j)][3:0];
                    b_cols[j*B_W+4 +: 4] <= (2 * (nt - j) + 1 < k32) ? b_mem[b_base[j] + 2 * (nt - j) + 1][3:0] : 4'd0;
                end else begin
                    b_cols[j*B_W +: B_W] <= b_mem[b_base[j] + (nt - j)];
                end
            end else begin
                b_cols[j*B_W +: B_W] <= {B_W{1'b0}};
            end
        end
    end

    // Per-tile column parameters, latched at start.
    reg [ACC_W-1:0] bias_r  [0:C-1];
    reg [7:0]       shift_r [0:C-1];
    always @(posedge clk) begin : column_params
        for (j = 0; j < C; j = j + 1) begin
            if (begin_tile) begin
                bias_r[j]  <= ({16'd0, next_n0} + j < {16'd0, n_total}) ? bias_mem[{16'd0, next_n0} + j] : {ACC_W{1'b0}};
                shift_r[j] <= ({16'd0, next_n0} + j < {16'd0, n_total}) ? shift_mem[{16'd0, next_n0} + j] : 8'd0;
            end
        end
    end

    // Requant stage input: in S_REQ cycle t < R the array registers tile row t; the shifters see it in cycle t + 1.
    wire [C*ACC_W-1:0] row_acc;
    systolic_array #(.R(R), .C(C), .A_W(A_W), .B_W(B_W), .ACC_W(ACC_W)) array (
        .clk(clk), .clear(state == S_CLEAR), .en(state == S_FEED), .mode(cfg_mode),
        .a_rows(a_rows), .sh_rows(sh_rows), .b_cols(b_cols),
        .capture(state == S_REQ && t < R), .row_sel(t[7:0]), .row_acc(row_acc));

    reg [31:0] row_d;  // the tile row now held in the array's row_acc register
    always @(posedge clk) begin : track_row
        if (state == S_REQ && t < R) row_d <= t;
    end

    // One shifter requantizer per column; in S_REQ row t of the tile passes through them.
    wire [C*ACC_W-1:0] acc_col;
    wire [C*OUT_W-1:0] y_col;
    genvar g;
    generate
        for (g = 0; g < C; g = g + 1) begin : g_requant
            shift_requant #(.ACC_W(ACC_W), .OUT_W(OUT_W)) rq (
                .x(row_acc[g*ACC_W +: ACC_W]), .bias(bias_r[g]), .shift(shift_r[g]), .qmin(cfg_qmin), .qmax(cfg_qmax),
                .twin_m(cfg_out_twin_m), .acc(acc_col[g*ACC_W +: ACC_W]), .y(y_col[g*OUT_W +: OUT_W]));
        end
    endgenerate

    integer c;
    wire [31:0] m_row = {16'd0, tm0} + row_d;
    always @(posedge clk) begin : control
        done <= 1'b0;
        layer_done <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
            t <= 32'd0;
            cycles <= 32'd0;
            layer_mode <= 1'b0;
            tile_count <= 32'd0;
        end else begin
            if (begin_tile) begin
                state <= S_CLEAR;
                tm0 <= next_m0;
                tn0 <= next_n0;
                cycles <= 32'd0;
                if (state == S_IDLE) begin
                    layer_mode <= run_layer;
                    tile_count <= 32'd0;
                    {cfg_mode, cfg_m, cfg_n, cfg_k} <= {mode, m_total, n_total, k_total};
                    {cfg_qmin, cfg_qmax} <= {qmin, qmax};
                    {cfg_twin_m, cfg_twin_sign, cfg_twin_bits, cfg_out_twin_m} <= {twin_m, twin_sign, twin_bits, out_twin_m};
                end
            end
            case (state)
                S_IDLE: ;
                S_CLEAR: begin
                    state <= S_FEED;
                    t <= 32'd0;
                    cycles <= cycles + 1;
                end
                S_FEED: begin
                    cycles <= cycles + 1;
                    if (t == feed_last) begin
                        state <= S_REQ;
                        t <= 32'd0;
                    end else begin
                        t <= t + 1;
                    end
                end
                S_REQ: begin
                    cycles <= cycles + 1;
                    if (t > 0) for (c = 0; c < C; c = c + 1) begin
                        if (m_row < {16'd0, cfg_m} && {16'd0, tn0} + c < {16'd0, cfg_n}) begin
                            out_mem[m_row * cfg_n + {16'd0, tn0} + c] <= y_col[c*OUT_W +: OUT_W];
                            acc_mem[m_row * cfg_n + {16'd0, tn0} + c] <= acc_col[c*ACC_W +: ACC_W];
                        end
                    end
                    if (t == R) state <= S_DONE;
                    else t <= t + 1;
                end
                default: begin  // S_DONE: the tile's last cycle
                    done <= 1'b1;
                    tile_mem[tile_count] <= cycles + 1;
                    tile_count <= tile_count + 1;
                    if (!begin_tile) begin
                        state <= S_IDLE;
                        layer_done <= layer_mode;
                        cycles <= cycles + 1;
                    end
                end
            endcase
        end
    end
endmodule
