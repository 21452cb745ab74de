// Integer LayerNorm unit (I-ViT's I-LayerNorm, Li & Gu, ICCV 2023; PTF shifts of FQ-ViT in the per-channel output
// shift): the same integers as hwsim.kernels.layernorm.layernorm_int. Per row of c channels:
//   sum pass (c cycles) + 1; mu = floor((2^(F+1) sum + c) / (2c)), the mean with F = MEAN_F fraction bits, by a
//   48-step restoring divider (signed floor) + 1;
//   variance pass (c cycles): var = sum (2^F x - mu)^2; std = isqrt(var) digit by digit (32 steps; 0 -> 1) + 1;
//   k = floor(2^(31+F) / std) by the same divider (48 steps) + 1;
//   output pass (c cycles): clamp(rshift_round((2^F x - mu) * k * G[j] + B[j], shift[j])) in 64-bit arithmetic;
//   1 cycle to finish:  cycles per row = 3c + 133 (hwsim.cost.cycles.layernorm_row_cycles).
// `run` processes `rows` rows of x.hex back to back; parameters come from gamma.hex, beta.hex, shift.hex; outputs go
// to out.hex and per-row cycle counts to rows.hex on `dump`.
// Host port: host_we writes host_wdata to the input buffer at host_addr and host_rdata reads the output buffer
// there. Testbenches load and dump files instead; the port keeps the datapath observable, so synthesis keeps it.
module layernorm_unit #(
    parameter integer X_W = 16,
    parameter integer OUT_W = 16,
    parameter integer ADDR_W = 14,
    parameter integer C_MAX = 1024
) (
    input  wire                    clk,
    input  wire                    rst,
    input  wire                    load,
    input  wire                    dump,
    input  wire                    run,
    input  wire [15:0]             c,
    input  wire [15:0]             rows,
    input  wire signed [OUT_W-1:0] qmin,
    input  wire signed [OUT_W-1:0] qmax,
    input  wire                    host_we,
    input  wire [1:0]              host_sel,   // 0: x, 1: gamma, 2: beta, 3: shift
    input  wire [ADDR_W-1:0]       host_addr,
    input  wire [63:0]             host_wdata,
    output wire [OUT_W-1:0]        host_rdata,
    output reg                     done
);
    localparam integer DEPTH = 1 << ADDR_W;
    localparam integer MEAN_F = 8;  // hwsim.kernels.layernorm.MEAN_FRAC_BITS
    localparam integer C_AW = $clog2(C_MAX);
    localparam [3:0] S_IDLE = 4'd0, S_SUM = 4'd1, S_SUMEND = 4'd2, S_DIV = 4'd3, S_DIVEND = 4'd4, S_VAR = 4'd5,
                     S_SQRT = 4'd6, S_SQEND = 4'd7, S_OUT = 4'd8, S_END = 4'd9;

    reg [X_W-1:0]   x_mem     [0:DEPTH-1];
    reg [OUT_W-1:0] out_mem   [0:DEPTH-1];
    reg [31:0]      row_mem   [0:DEPTH-1];
    reg [15:0]      gamma_mem [0:C_MAX-1];
    reg [63:0]      beta_mem  [0:C_MAX-1];
    reg [7:0]       shift_mem [0:C_MAX-1];

    wire [C_AW-1:0] host_c = host_addr[C_AW-1:0];
    always @(posedge clk) begin : host_port
        if (host_we) begin
            case (host_sel)
                2'd0: x_mem[host_addr] <= host_wdata[X_W-1:0];
                2'd1: gamma_mem[host_c] <= host_wdata[15:0];
                2'd2: beta_mem[host_c] <= host_wdata;
                default: shift_mem[host_c] <= host_wdata[7:0];
            endcase
        end
    end
    assign host_rdata = out_mem[host_addr];

`ifndef SYNTHESIS
    always @(posedge clk) begin : sim_files
        if (load) begin
            $readmemh("x.hex", x_mem);
            $readmemh("gamma.hex", gamma_mem);
            $readmemh("beta.hex", beta_mem);
            $readmemh("shift.hex", shift_mem);
        end
        if (dump) begin
            $writememh("out.hex", out_mem, 0, rows * c - 1);
            $writememh("rows.hex", row_mem, 0, rows - 1);
        end
    end
`endif

    reg [3:0] state;
    reg [31:0] j, row;  // 32-bit so buffers may exceed 2^16 entries
    reg [ADDR_W-1:0] base;
    wire [31:0] c32 = {16'd0, c};
    reg [31:0] cycles;
    reg [5:0] step;
    reg signed [47:0] sum;
    reg signed [47:0] mu;
    reg [63:0] var_acc, sq_rem, sq_res, sq_bit;
    reg [39:0] k;
    reg second_div;  // 0: the divider computes mu, 1: it computes k
    // restoring divider state: quotient of div_num / div_den, 48 steps
    reg [47:0] div_num, div_q;
    /* verilator lint_off UNUSEDSIGNAL */  // the remainder stays below the divisor, so its top bit is always 0
    reg [47:0] div_rem;
    /* verilator lint_on UNUSEDSIGNAL */
    reg [47:0] div_den;
    reg div_neg;

    wire signed [X_W-1:0] x_j = x_mem[base + j[ADDR_W-1:0]];
    wire signed [47:0] y = ({{(48-X_W){x_j[X_W-1]}}, x_j} <<< MEAN_F) - mu;
    wire [C_AW-1:0] jc = j[C_AW-1:0];
    wire signed [63:0] acc = {{16{y[47]}}, y} * $signed({24'd0, k})
                             * {{48{gamma_mem[jc][15]}}, gamma_mem[jc]} + $signed(beta_mem[jc]);
    wire signed [7:0] s = shift_mem[jc];
    wire [5:0] s_right = s[5:0];
    wire [5:0] s_left = 6'd0 - s[5:0];
    wire signed [63:0] half = (s > 0) ? (64'sd1 <<< (s_right - 6'd1)) : 64'sd0;
    wire signed [63:0] shifted = (s > 0) ? ((acc + half) >>> s_right) : (acc <<< s_left);
    wire signed [63:0] lo = {{(64-OUT_W){qmin[OUT_W-1]}}, qmin};
    wire signed [63:0] hi = {{(64-OUT_W){qmax[OUT_W-1]}}, qmax};
    wire [OUT_W-1:0] y_out = (shifted > hi) ? qmax : ((shifted < lo) ? qmin : shifted[OUT_W-1:0]);
    wire [47:0] div_next_rem = {div_rem[46:0], div_num[47 - step]};
    wire signed [47:0] num_mu = (sum <<< (MEAN_F + 1)) + {32'd0, c};
    wire [47:0] den_mu = {31'd0, c, 1'b0};
    wire [63:0] y_sq = $unsigned({{16{y[47]}}, y} * {{16{y[47]}}, y});

    always @(posedge clk) begin : control
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
        end else begin
            if (state != S_IDLE) cycles <= cycles + 1;
            case (state)
                S_IDLE: if (run) begin
                    state <= S_SUM;
                    row <= 32'd0;
                    base <= {ADDR_W{1'b0}};
                    j <= 32'd0;
                    sum <= 48'sd0;
                    cycles <= 32'd0;
                end
                S_SUM: begin
                    sum <= sum + {{(48-X_W){x_j[X_W-1]}}, x_j};
                    if (j == c32 - 1) state <= S_SUMEND;
                    else j <= j + 1;
                end
                S_SUMEND: begin  // floor division of a signed numerator: -ceil(-n / d) = -floor((-n + d - 1) / d)
                    second_div <= 1'b0;
                    div_neg <= num_mu < 0;
                    div_num <= (num_mu < 0) ? $unsigned(-num_mu) + den_mu - 48'd1 : $unsigned(num_mu);
                    div_den <= den_mu;
                    div_rem <= 48'd0;
                    div_q <= 48'd0;
                    step <= 6'd0;
                    state <= S_DIV;
                end
                S_DIV: begin
                    if (div_next_rem >= div_den) begin
                        div_rem <= div_next_rem - div_den;
                        div_q[47 - step] <= 1'b1;
                    end else begin
                        div_rem <= div_next_rem;
                    end
                    if (step == 6'd47) state <= S_DIVEND;
                    step <= step + 1;
                end
                S_DIVEND: begin
                    j <= 32'd0;
                    if (!second_div) begin
                        mu <= div_neg ? -$signed(div_q) : $signed(div_q);
                        var_acc <= 64'd0;
                        state <= S_VAR;
                    end else begin
                        k <= div_q[39:0];
                        state <= S_OUT;
                    end
                end
                S_VAR: begin
                    var_acc <= var_acc + y_sq;
                    if (j == c32 - 1) begin
                        sq_rem <= var_acc + y_sq;
                        sq_res <= 64'd0;
                        sq_bit <= 64'd1 << 62;
                        step <= 6'd0;
                        state <= S_SQRT;
                    end else j <= j + 1;
                end
                S_SQRT: begin
                    if (sq_rem >= sq_res + sq_bit) begin
                        sq_rem <= sq_rem - (sq_res + sq_bit);
                        sq_res <= (sq_res >> 1) + sq_bit;
                    end else begin
                        sq_res <= sq_res >> 1;
                    end
                    sq_bit <= sq_bit >> 2;
                    if (step == 6'd31) state <= S_SQEND;
                    step <= step + 1;
                end
                S_SQEND: begin  // std = isqrt(var), 0 -> 1; then k = 2^(31+F) / std
                    second_div <= 1'b1;
                    div_num <= 48'd1 << (31 + MEAN_F);
                    div_den <= (sq_res == 64'd0) ? 48'd1 : sq_res[47:0];
                    div_rem <= 48'd0;
                    div_q <= 48'd0;
                    step <= 6'd0;
                    state <= S_DIV;
                end
                S_OUT: begin
                    out_mem[base + j[ADDR_W-1:0]] <= y_out;
                    if (j == c32 - 1) state <= S_END;
                    else j <= j + 1;
                end
                default: begin  // S_END
                    row_mem[row[ADDR_W-1:0]] <= cycles + 1;
                    cycles <= 32'd0;
                    j <= 32'd0;
                    sum <= 48'sd0;
                    if (row == {16'd0, rows} - 1) begin
                        state <= S_IDLE;
                        done <= 1'b1;
                    end else begin
                        row <= row + 1;
                        base <= base + c32[ADDR_W-1:0];
                        state <= S_SUM;
                    end
                end
            endcase
        end
    end
endmodule
