// Integer GELU unit after I-ViT's ShiftGELU (Li & Gu, ICCV 2023): the same integers as hwsim.kernels.gelu.gelu_int,
// GELU(x) ~ x sigmoid(1.702 x) with the sigmoid's symmetry, and with `silu` set SiLU(x) = x sigmoid(x)
// (hwsim.kernels.activations.silu_int: z = x). One element enters per cycle (frac = fractional bits of x,
// P = sig_bits, both runtime):
//   stage 0:       z = x + (x >>> 1) + (x >>> 3) + (x >>> 4) (SiLU: z = x);  E = shift_exp(-|z|)  (2^15 e^-|z|);
//                  den = 2^15 + E
//   stages 1..16:  a restoring divider, one quotient bit per stage: sp = floor(2^(15+P) / den) <= 2^P
//                  (the numerator's low 16 bits are zero, so the partial remainder starts at 2^(P-1))
//   write:         out = x * (z >= 0 ? sp : 2^P - sp)
// Per row of n elements: n feed cycles, 17 cycles until the last product is written, 1 to finish:
// cycles per row = n + 18 (hwsim.cost.cycles.gelu_row_cycles). `run` processes `rows` rows of x.hex back to back;
// products go to out.hex and per-row cycle counts to rows.hex on `dump`.
// Host port: host_we writes host_wdata to the input buffer at host_addr and host_rdata reads the output buffer
// there. Testbenches load and dump files instead; the port keeps the datapath observable, so synthesis keeps it.
module gelu_unit #(
    parameter integer X_W = 16,
    parameter integer OUT_W = 32,
    parameter integer ADDR_W = 14
) (
    input  wire        clk,
    input  wire        rst,
    input  wire        load,
    input  wire        dump,
    input  wire        run,
    input  wire [15:0] n,
    input  wire [15:0] rows,
    input  wire [4:0]  frac,
    input  wire [3:0]  sig_bits,
    input  wire        silu,
    input  wire              host_we,
    input  wire [ADDR_W-1:0] host_addr,
    input  wire [X_W-1:0]    host_wdata,
    output wire [OUT_W-1:0]  host_rdata,
    output reg         done
);
    localparam integer DEPTH = 1 << ADDR_W;
    localparam integer STAGES = 16;
    localparam [1:0] S_IDLE = 2'd0, S_FEED = 2'd1, S_DRAIN = 2'd2, S_END = 2'd3;

    reg [X_W-1:0]   x_mem   [0:DEPTH-1];
    reg [OUT_W-1:0] out_mem [0:DEPTH-1];
    reg [31:0]      row_mem [0:DEPTH-1];

    always @(posedge clk) begin : host_port
        if (host_we) x_mem[host_addr] <= host_wdata;
    end
    assign host_rdata = out_mem[host_addr];

`ifndef SYNTHESIS
    always @(posedge clk) begin : sim_files
        if (load) $readmemh("x.hex", x_mem);
        if (dump) begin
            $writememh("out.hex", out_mem, 0, rows * n - 1);
            $writememh("rows.hex", row_mem, 0, rows - 1);
        end
    end
`endif

    reg [1:0] state;
    reg [31:0] j, row, cycles;
    reg [4:0] drain;
    reg [ADDR_W-1:0] base;
    wire [31:0] n32 = {16'd0, n};
    wire feed = state == S_FEED;

    // stage 0 (combinational from the buffer)
    wire signed [X_W-1:0] x_j = x_mem[base + j[ADDR_W-1:0]];
    wire signed [X_W+1:0] xe = {{2{x_j[X_W-1]}}, x_j};
    wire signed [X_W+1:0] z = silu ? xe : xe + (xe >>> 1) + (xe >>> 3) + (xe >>> 4);
    wire [15:0] e_j;
    shift_exp #(.D_W(X_W + 2)) exp_z (.d(z[X_W+1] ? z : -z), .f(frac), .e(e_j));

    // pipeline registers, index 0 = after stage 0, index k = after divider stage k
    reg signed [X_W-1:0] v_s   [0:STAGES];
    reg                  neg_s [0:STAGES];
    reg [16:0]           den_s [0:STAGES];
    reg [16:0]           rem_s [0:STAGES];
    reg [15:0]           q_s   [0:STAGES];
    reg [ADDR_W-1:0]     a_s   [0:STAGES];
    reg                  ok_s  [0:STAGES];

    always @(posedge clk) begin : stage0
        ok_s[0] <= feed && !rst;
        v_s[0] <= x_j;
        neg_s[0] <= z[X_W+1];
        den_s[0] <= 17'd32768 + {1'b0, e_j};
        rem_s[0] <= 17'd1 << (sig_bits - 4'd1);
        q_s[0] <= 16'd0;
        a_s[0] <= base + j[ADDR_W-1:0];
    end

    genvar k;
    generate
        for (k = 0; k < STAGES; k = k + 1) begin : divide
            wire [16:0] shifted = {rem_s[k][15:0], 1'b0};  // rem < den <= 2^16, so bit 16 is 0 before the shift
            wire take = shifted >= den_s[k];
            always @(posedge clk) begin
                ok_s[k+1] <= ok_s[k] && !rst;
                v_s[k+1] <= v_s[k];
                neg_s[k+1] <= neg_s[k];
                den_s[k+1] <= den_s[k];
                rem_s[k+1] <= take ? shifted - den_s[k] : shifted;
                q_s[k+1] <= {q_s[k][14:0], take};
                a_s[k+1] <= a_s[k];
            end
        end
    endgenerate

    wire [16:0] one = 17'd1 << sig_bits;
    wire [16:0] sig = neg_s[STAGES] ? one - {1'b0, q_s[STAGES]} : {1'b0, q_s[STAGES]};
    wire signed [OUT_W-1:0] product = $signed({{(OUT_W-X_W){v_s[STAGES][X_W-1]}}, v_s[STAGES]})
                                      * $signed({{(OUT_W-17){1'b0}}, sig});
    always @(posedge clk) begin : write
        if (ok_s[STAGES]) out_mem[a_s[STAGES]] <= product;
    end

    always @(posedge clk) begin : control
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
        end else begin
            case (state)
                S_IDLE: if (run) begin
                    state <= S_FEED;
                    row <= 32'd0;
                    base <= {ADDR_W{1'b0}};
                    j <= 32'd0;
                    cycles <= 32'd0;
                end
                S_FEED: begin
                    cycles <= cycles + 1;
                    drain <= 5'd0;
                    if (j == n32 - 1) state <= S_DRAIN;
                    else j <= j + 1;
                end
                S_DRAIN: begin  // the last element passes stage 0, the 16 divider stages and the write
                    cycles <= cycles + 1;
                    if (drain == STAGES[4:0]) state <= S_END;
                    else drain <= drain + 1;
                end
                default: begin  // S_END
                    row_mem[row[ADDR_W-1:0]] <= cycles + 1;
                    cycles <= 32'd0;
                    j <= 32'd0;
                    if (row == {16'd0, rows} - 1) begin
                        state <= S_IDLE;
                        done <= 1'b1;
                    end else begin
                        row <= row + 1;
                        base <= base + n32[ADDR_W-1:0];
                        state <= S_FEED;
                    end
                end
            endcase
        end
    end
endmodule
