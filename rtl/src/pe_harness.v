// Vector harness for mac_pe and shift_requant: runs `count` vectors (a multiple of 4) from buffers after `start`.
// PE vectors come in groups of 4: a clear cycle, 4 accumulate cycles, then the accumulator is stored, so each group
// checks a 4-term sum. Requant vectors stream one per cycle alongside. Buffers load from pe_vec.hex
// ({mode, sh, b, a} per word) and rq_vec.hex ({twin_m, qmax, qmin, shift, bias, x}) on `load`; results go to pe_acc.hex and
// rq_out.hex ({acc, y}) on `dump` (simulation only).
module pe_harness #(
    parameter integer ACC_W = 32,
    parameter integer OUT_W = 16,
    parameter integer ADDR_W = 17
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              load,
    input  wire              dump,
    input  wire              start,
    input  wire [ADDR_W-1:0] count,
    output reg               done
);
    localparam integer DEPTH = 1 << ADDR_W;
    localparam integer RQ_W = 2 * ACC_W + 8 + 2 * OUT_W + 4;
    reg [21:0]            pe_vec [0:DEPTH-1];
    reg [RQ_W-1:0]        rq_vec [0:DEPTH-1];
    reg [ACC_W-1:0]       pe_acc [0:DEPTH-1];
    reg [ACC_W+OUT_W-1:0] rq_out [0:DEPTH-1];

`ifndef SYNTHESIS
    always @(posedge clk) begin : sim_files
        if (load) begin
            $readmemh("pe_vec.hex", pe_vec);
            $readmemh("rq_vec.hex", rq_vec);
        end
        if (dump) begin
            $writememh("pe_acc.hex", pe_acc, 0, count / 4 - 1);
            $writememh("rq_out.hex", rq_out, 0, count - 1);
        end
    end
`endif

    reg [21:0] pe_in;
    reg clear, en, busy;
    reg [2:0] phase;  // 0 clear, 1..3 load, 4 last accumulate, 5 store
    reg [ADDR_W-1:0] v, group;
    wire signed [ACC_W-1:0] acc;
    wire [7:0] a_pass, b_pass;
    wire [3:0] sh_pass;
    mac_pe #(.ACC_W(ACC_W)) pe (
        .clk(clk), .clear(clear), .en(en), .mode(pe_in[21:20]), .a_in(pe_in[7:0]), .b_in(pe_in[15:8]),
        .sh_in(pe_in[19:16]), .a_out(a_pass), .b_out(b_pass), .sh_out(sh_pass), .acc(acc));
    wire unused_pass = ^{a_pass, b_pass, sh_pass};

    reg [ADDR_W-1:0] r, r_d;
    reg r_valid;
    reg [RQ_W-1:0] rq;
    wire signed [ACC_W-1:0] rq_acc;
    wire signed [OUT_W-1:0] rq_y;
    shift_requant #(.ACC_W(ACC_W), .OUT_W(OUT_W)) requant (
        .x(rq[ACC_W-1:0]), .bias(rq[2*ACC_W-1:ACC_W]), .shift(rq[2*ACC_W+7:2*ACC_W]),
        .qmin(rq[2*ACC_W+8+OUT_W-1:2*ACC_W+8]), .qmax(rq[RQ_W-5:2*ACC_W+8+OUT_W]), .twin_m(rq[RQ_W-1:RQ_W-4]),
        .acc(rq_acc), .y(rq_y));

    always @(posedge clk) begin : run
        done <= 1'b0;
        if (rst) begin
            busy <= 1'b0;
            clear <= 1'b0;
            en <= 1'b0;
            r_valid <= 1'b0;
        end else if (start && !busy) begin
            busy <= 1'b1;
            v <= {ADDR_W{1'b0}};
            r <= {ADDR_W{1'b0}};
            group <= {ADDR_W{1'b0}};
            phase <= 3'd0;
            clear <= 1'b1;
            en <= 1'b0;
            r_valid <= 1'b0;
        end else if (busy) begin
            // requant stream: fetch vector r, store the result of the vector fetched last cycle
            rq <= rq_vec[r];
            r_d <= r;
            r_valid <= r < count;
            if (r < count) r <= r + 1'b1;
            if (r_valid) rq_out[r_d] <= {rq_acc, rq_y};
            case (phase)
                3'd0, 3'd1, 3'd2, 3'd3: begin
                    clear <= 1'b0;
                    en <= 1'b1;
                    pe_in <= pe_vec[v];
                    v <= v + 1'b1;
                    phase <= phase + 3'd1;
                end
                3'd4: begin
                    en <= 1'b0;
                    phase <= 3'd5;
                end
                default: begin
                    pe_acc[group] <= acc;
                    group <= group + 1'b1;
                    clear <= 1'b1;
                    phase <= 3'd0;
                    if (v >= count && !r_valid) begin
                        busy <= 1'b0;
                        done <= 1'b1;
                    end
                end
            endcase
        end
    end
endmodule
