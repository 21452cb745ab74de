// Integer softmax unit with log2 output: I-ViT's Shiftmax exponent (Li & Gu, ICCV 2023) and FQ-ViT's log-int-softmax
// code (Lin et al., IJCAI 2022), as P^2-ViT uses, or with `sqrt2` RepQ-ViT's log-sqrt(2) code (Li et al., ICCV 2023),
// or with `eta` > 0 I&S-ViT's SULQ code (the log2 code of E + eta S / 2^12); the same integers as
// hwsim.kernels.softmax (LOG2 and LOG_SQRT2 modes, eta, 4-bit codes).
// Per row of n logits (FRAC fractional bits, runtime):
//   pass 1 (n cycles): m = max_j x_j
//   pass 2 (n cycles): E_j = exp_shift(x_j - m), S = sum E_j        (shift_exp.v: shift-add log2(e), linear 2^-frac, F = 15)
//   pass 3 (n cycles): l = max{l : E_j 2^l <= S}; code = l + [128 S >= 181 E_j 2^l] (round(log2(S / E_j)) with
//                      sqrt(2) ~ 181/128, as hwsim; no divider); E_j = 0 or code > 14 give 15 (the zero code);
//                      with `sqrt2` the same on E_j^2 and S^2 (round(log_sqrt2(S / E_j)), half-octave codes);
//                      with `eta` on min(E_j + ((eta S + 2^11) >> 12), S) (SULQ: log2 of p + eta)
//   1 cycle to finish the row:  cycles per row = 3n + 1 (hwsim.cost.cycles.softmax_row_cycles).
// With `twin_m` = m > 0 the codes are PTQ4ViT's twin-uniform ones (`bits` wide, hwsim.kernels.softmax mode TWIN): a
// restoring divider takes 31 cycles between passes 2 and 3 for D = floor((2^31 - 1) / S), one quotient bit per cycle,
// and pass 3 rounds P_j = E_j D at the fine step 2^-(b-1+m) (q1) and the coarse step 2^-(b-1) (q2):
//   code = q1 < 2^(b-1) ? q1 : 2^(b-1) + min(q2, 2^(b-1) - 1);   cycles per row = 3n + 1 + 31.
// `run` processes `rows` rows of x.hex (row-major, n per row) back to back; codes go to out.hex, per-row cycle
// counts to rows.hex on `dump`.
// Host port: host_we writes host_wdata to the input buffer at host_addr and host_rdata reads the output buffer
// there. Testbenches load and dump files instead; the port keeps the datapath observable, so synthesis keeps it.
module softmax_unit #(
    parameter integer X_W = 16,
    parameter integer ADDR_W = 14,
    parameter integer N_MAX = 1024,
    parameter integer SQRT2 = 1,    // the unit has the log-sqrt(2) code (area: a 32 x 32 squarer, 16 x 16 per element)
    parameter integer SULQ = 1,     // the unit has SULQ's eta shift (area: a 16 x 32 product per row, a wide compare)
    parameter integer TWIN = 1,     // the unit has twin-uniform codes (area: a 31-step divider, a 16 x 31 product, 8-bit codes)
    localparam integer C_W = (TWIN != 0) ? 8 : 4  // code width
) (
    input  wire              clk,
    input  wire              rst,
    input  wire              load,
    input  wire              dump,
    input  wire              run,
    input  wire [15:0]       n,
    input  wire [15:0]       rows,
    input  wire [4:0]        frac,
    input  wire              sqrt2,
    input  wire [15:0]       eta,
    input  wire [3:0]        twin_m,
    input  wire [3:0]        bits,
    input  wire              host_we,
    input  wire [ADDR_W-1:0] host_addr,
    input  wire [X_W-1:0]    host_wdata,
    output wire [C_W-1:0]    host_rdata,
    output reg               done
);
    localparam integer F = 15;
    localparam [2:0] S_IDLE = 3'd0, S_MAX = 3'd1, S_EXP = 3'd2, S_LOG = 3'd3, S_DIV = 3'd4;
    localparam integer DEPTH = 1 << ADDR_W;
    localparam integer E_AW = $clog2(N_MAX);

    reg [X_W-1:0] x_mem   [0:DEPTH-1];
    reg [C_W-1:0] out_mem [0:DEPTH-1];
    reg [31:0]    row_mem [0:DEPTH-1];
    reg [F:0]     e_mem   [0:N_MAX-1];

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

    function [5:0] msb;
        input [39:0] v;
        integer b;
        begin
            msb = 6'd0;
            for (b = 0; b < 40; b = b + 1)
                if (v[b]) msb = b[5:0];
        end
    endfunction

    // Log2 code of E / S: round(log2(S / E)) with sqrt(2) ~ 181/128, as hwsim, without division.
    function [3:0] log_code;
        input [39:0] s;
        input [F:0] e;
        reg [5:0] l0, l;
        reg [39:0] e40;
        reg [47:0] e_up, s_up;
        reg [4:0] code;
        begin
            e40 = {{(39-F){1'b0}}, e};
            l0 = msb(s) - msb(e40);
            l = ((e40 << l0) > s) ? l0 - 6'd1 : l0;
            e_up = {8'd0, e40 << l} * 48'd181;  // 181 E 2^l <= 181 S < 2^48
            s_up = {8'd0, s} << 7;
            code = {1'b0, l[3:0]} + ((s_up >= e_up) ? 5'd1 : 5'd0);
            if (e == 0 || l > 6'd15 || code > 5'd15) log_code = 4'd15;
            else log_code = code[3:0];
        end
    endfunction

    function [6:0] msb64;
        input [63:0] v;
        integer b;
        begin
            msb64 = 7'd0;
            for (b = 0; b < 64; b = b + 1)
                if (v[b]) msb64 = b[6:0];
        end
    endfunction

    // The log2 code on wide operands (a second copy of log_code at 64 / 72 bits, so that a unit without the
    // log-sqrt(2) and SULQ options keeps log_code's 40 / 48-bit datapath: 5 623 cells against 6 549 with one shared
    // wide function): E^2 / S^2 for the log-sqrt(2) code (S < 2^32: rows of at most N_MAX <= 2^16
    // elements, so S^2 < 2^64 and E^2 < 2^32), and SULQ's (E + eta S) / S.
    function [3:0] log_code_wide;
        input [63:0] s;
        input [31:0] e;
        reg [6:0] l0, l;
        reg [63:0] e64;
        reg [71:0] e_up, s_up;
        reg [7:0] code;
        begin
            e64 = {32'd0, e};
            l0 = msb64(s) - msb64(e64);
            l = ((e64 << l0) > s) ? l0 - 7'd1 : l0;
            e_up = {8'd0, e64 << l} * 72'd181;
            s_up = {8'd0, s} << 7;
            code = {1'b0, l} + ((s_up >= e_up) ? 8'd1 : 8'd0);
            if (e == 0 || code > 8'd15) log_code_wide = 4'd15;
            else log_code_wide = code[3:0];
        end
    endfunction

    reg [2:0] state;
    reg [31:0] j, row;  // 32-bit so buffers may exceed 2^16 entries
    reg [ADDR_W-1:0] base;
    wire [31:0] n32 = {16'd0, n};
    reg [31:0] cycles;
    reg signed [X_W-1:0] m;
    reg [39:0] sum;
    wire signed [X_W-1:0] x_j = x_mem[base + j[ADDR_W-1:0]];
    wire [F:0] e_j;  // 2^F e^((x_j - m) / 2^frac), as hwsim.kernels.shiftexp.exp_shift
    shift_exp #(.D_W(X_W + 2)) exp_j (.d({{2{x_j[X_W-1]}}, x_j} - {{2{m[X_W-1]}}, m}), .f(frac), .e(e_j));

    wire [F:0] e_row = e_mem[j[E_AW-1:0]];
    reg [C_W-1:0] code_j;
    wire [3:0] code_log2 = log_code(sum, e_row);
    wire [3:0] code_sqrt2;
    wire [3:0] code_sulq;
    wire [7:0] code_twin;
    wire use_twin = (TWIN != 0) && twin_m != 4'd0;
    reg [30:0] quot;   // floor((2^31 - 1) / S) once the divider has run
    reg [31:0] rem;
    reg [4:0]  dstep;
    wire [32:0] rem_try = {rem, 1'b1};  // the dividend 2^31 - 1 brings down a 1 at every step
    wire [32:0] s33 = {1'b0, sum[31:0]};
    wire take = rem_try >= s33;
    wire [31:0] rem_left = take ? rem_try[31:0] - sum[31:0] : rem_try[31:0];  // < S: 32 bits suffice
    generate
        if (TWIN != 0) begin : with_twin
            wire [47:0] p_tw = {32'd0, e_row} * {17'd0, quot};            // E_j D <= 2^31 - 1
            wire [4:0] fine_sh = 5'd31 - ({1'b0, bits} - 5'd1 + {1'b0, twin_m});
            wire [4:0] coarse_sh = 5'd31 - ({1'b0, bits} - 5'd1);
            wire [47:0] q1 = (p_tw + (48'd1 << (fine_sh - 5'd1))) >> fine_sh;
            wire [47:0] q2 = (p_tw + (48'd1 << (coarse_sh - 5'd1))) >> coarse_sh;
            wire [47:0] region = 48'd1 << (bits - 4'd1);
            wire [7:0] q2_cap = (q2 > region - 48'd1) ? region[7:0] - 8'd1 : q2[7:0];
            assign code_twin = (q1 < region) ? q1[7:0] : region[7:0] + q2_cap;
        end else begin : no_twin
            assign code_twin = 8'd0;
        end
        if (SQRT2 != 0) begin : with_sqrt2
            wire [31:0] e_ext = {{(31-F){1'b0}}, e_row};
            wire [31:0] e_sq = e_ext * e_ext;                               // E_j^2 < 2^32
            wire [63:0] sum_sq = {32'd0, sum[31:0]} * {32'd0, sum[31:0]};   // S^2, S < 2^32
            assign code_sqrt2 = log_code_wide(sum_sq, e_sq);
        end else begin : no_sqrt2
            assign code_sqrt2 = 4'd0;
        end
        if (SULQ != 0) begin : with_sulq
            wire [47:0] eta_s = ({16'd0, sum[31:0]} * {32'd0, eta} + 48'd2048) >> 12;  // round(eta S / 2^12)
            wire [47:0] e_eta = {{(47-F){1'b0}}, e_row} + eta_s;
            wire [31:0] e_cap = (e_eta > {16'd0, sum[31:0]}) ? sum[31:0] : e_eta[31:0];  // p + eta >= 1: code 0
            assign code_sulq = log_code_wide({32'd0, sum[31:0]}, e_cap);
        end else begin : no_sulq
            assign code_sulq = 4'd0;
        end
    endgenerate
    always @(*) begin : pick_code
        code_j = {C_W{1'b0}};
        if (use_twin) code_j = code_twin[C_W-1:0];
        else if (SQRT2 != 0 && sqrt2) code_j[3:0] = code_sqrt2;
        else if (SULQ != 0 && eta != 16'd0) code_j[3:0] = code_sulq;
        else code_j[3:0] = code_log2;
    end
    always @(posedge clk) begin : control
        done <= 1'b0;
        if (rst) begin
            state <= S_IDLE;
        end else begin
            case (state)
                S_IDLE: if (run) begin
                    state <= S_MAX;
                    row <= 32'd0;
                    base <= {ADDR_W{1'b0}};
                    j <= 32'd0;
                    cycles <= 32'd0;
                    m <= {1'b1, {(X_W-1){1'b0}}};
                end
                S_MAX: begin
                    cycles <= cycles + 1;
                    if (x_j > m) m <= x_j;
                    if (j == n32 - 1) begin
                        j <= 32'd0;
                        sum <= 40'd0;
                        state <= S_EXP;
                    end else j <= j + 1;
                end
                S_EXP: begin
                    cycles <= cycles + 1;
                    e_mem[j[E_AW-1:0]] <= e_j;
                    sum <= sum + {{(39-F){1'b0}}, e_j};
                    if (j == n32 - 1) begin
                        j <= 32'd0;
                        rem <= 32'd0;
                        dstep <= 5'd0;
                        state <= use_twin ? S_DIV : S_LOG;
                    end else j <= j + 1;
                end
                S_DIV: begin
                    cycles <= cycles + 1;
                    rem <= rem_left;
                    quot <= {quot[29:0], take};
                    dstep <= dstep + 5'd1;
                    if (dstep == 5'd30) state <= S_LOG;
                end
                default: begin  // S_LOG, then the row's last cycle
                    cycles <= cycles + 1;
                    if (j < n32) begin
                        out_mem[base + j[ADDR_W-1:0]] <= code_j;
                        j <= j + 1;
                    end else begin
                        row_mem[row[ADDR_W-1:0]] <= cycles + 1;
                        cycles <= 32'd0;
                        j <= 32'd0;
                        m <= {1'b1, {(X_W-1){1'b0}}};
                        if (row == {16'd0, rows} - 1) begin
                            state <= S_IDLE;
                            done <= 1'b1;
                        end else begin
                            row <= row + 1;
                            base <= base + n32[ADDR_W-1:0];
                            state <= S_MAX;
                        end
                    end
                end
            endcase
        end
    end
endmodule
