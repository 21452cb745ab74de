// Shared by the plain-Verilog vector testbenches: docs/vectors.md's conventions, nothing else.
// Words are read into 64-bit memories ($readmemh zero-extends); sx() sign-extends a word of `bits` bits.
function signed [63:0] sx(input [63:0] v, input integer bits, input integer is_signed);
    begin
        if (bits < 64 && is_signed != 0 && v[bits - 1])
            sx = $signed(v) - $signed(64'd1 << bits);
        else
            sx = $signed(v);
    end
endfunction

// round-half-up shift: (x + 2^(s-1)) >>> s for s > 0, x <<< -s otherwise
function signed [63:0] rs(input signed [63:0] x, input signed [63:0] s);
    begin
        if (s > 0)
            rs = (x + (64'sd1 <<< (s - 1))) >>> s;
        else
            rs = x <<< (-s);
    end
endfunction

function signed [63:0] clamp(input signed [63:0] x, input signed [63:0] lo, input signed [63:0] hi);
    begin
        clamp = x < lo ? lo : (x > hi ? hi : x);
    end
endfunction

// floor division by a positive divisor (Verilog's / truncates toward zero)
function signed [63:0] fdiv(input signed [63:0] a, input signed [63:0] b);
    reg signed [63:0] q;
    begin
        q = a / b;
        if (a % b != 0 && a < 0)
            q = q - 1;
        fdiv = q;
    end
endfunction

function [63:0] isqrt(input [63:0] v);
    reg [63:0] r, bit_;
    reg [63:0] x;
    begin
        x = v;
        r = 0;
        bit_ = 64'd1 << 62;
        while (bit_ > x)
            bit_ = bit_ >> 2;
        while (bit_ != 0) begin
            if (x >= r + bit_) begin
                x = x - (r + bit_);
                r = (r >> 1) + bit_;
            end else
                r = r >> 1;
            bit_ = bit_ >> 2;
        end
        isqrt = r;
    end
endfunction

integer errors = 0;
integer checked = 0;

task check(input integer index, input signed [63:0] expected, input signed [63:0] computed);
    begin
        checked = checked + 1;
        if (expected !== computed) begin
            if (errors == 0)
                $display("FIRST_MISMATCH index=%0d expected=%0d computed=%0d", index, expected, computed);
            errors = errors + 1;
        end
    end
endtask

task finish_report;
    begin
        $display("RESULT %s errors=%0d checked=%0d", errors != 0 ? "FAIL" : "PASS", errors, checked);
        $finish;
    end
endtask

// 2^15 * e^(d / 2^f) for d <= 0 (docs/vectors.md, "softmax": I-ViT's shift exponential)
function signed [63:0] exp_fixed(input signed [63:0] d, input integer f);
    reg signed [63:0] t, u, q, r, frac;
    begin
        t = d + fdiv(d, 2) - fdiv(d, 16);
        u = -t;
        q = fdiv(u, 64'sd1 <<< f);
        r = u - q * (64'sd1 <<< f);
        frac = fdiv(r <<< 15, 64'sd1 <<< (f + 1));
        exp_fixed = (q > 15) ? 0 : (((64'sd1 <<< 15) - frac) >>> q);
    end
endfunction
