"""cocotb testbench of rtl/src/pe_harness.v (mac_pe + shift_requant): expected values from hwsim via rtl.vectors."""
from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

import cocotb
from rtl._cocotb import load_run_dump
from rtl.hexfile import hex_words, read_hex


def _pack_hex(path: Path, fields: list[tuple[np.ndarray, int]]) -> None:
    """Pack fields (values, width) low field first into one hex word per line."""
    words = np.zeros(len(fields[0][0]), dtype=object)
    offset = 0
    for values, width in fields:
        words = words + ((np.asarray(values, np.int64).astype(object) & ((1 << width) - 1)) << offset)
        offset += width
    digits = (offset + 3) // 4
    path.write_text("\n".join(format(int(w), f"0{digits}x") for w in words) + "\n")


@cocotb.test()
async def pe_and_requant_match_hwsim(dut) -> None:
    manifest = json.loads(Path(os.environ["VITSIM_RTL_MANIFEST"]).read_text())
    data = dict(np.load(manifest["npz"]))
    acc_w, out_w = int(dut.ACC_W.value), int(dut.OUT_W.value)
    count = max(len(data["a"]), len(data["x"]))
    count += (-count) % 4
    pad = lambda v: np.concatenate([v, np.zeros(count - len(v), np.int64)])  # noqa: E731
    _pack_hex(Path("pe_vec.hex"), [(pad(data["a"]), 8), (pad(data["b"]), 8), (pad(data["sh"]), 4), (pad(data["mode"]), 2)])
    _pack_hex(Path("rq_vec.hex"), [(pad(data["x"]), acc_w), (pad(data["bias"]), acc_w), (pad(data["shift"]), 8),
                                   (pad(data["qmin"]), out_w), (pad(data["qmax"]), out_w), (pad(data["twin_m"]), 4)])
    dut.count.value = count
    await load_run_dump(dut, run_signal="start")
    n_groups, n_rq = len(data["expected"]), len(data["x"])
    pe_acc = read_hex(Path("pe_acc.hex"), acc_w, count // 4)[:n_groups]
    rq_words = hex_words(Path("rq_out.hex"), n_rq)
    rq_y = np.array([int(w) & ((1 << out_w) - 1) for w in rq_words], dtype=np.int64)
    rq_y = np.where(rq_y >= 1 << (out_w - 1), rq_y - (1 << out_w), rq_y)
    rq_acc = np.array([int(w) >> out_w for w in rq_words], dtype=np.int64)
    rq_acc = np.where(rq_acc >= 1 << (acc_w - 1), rq_acc - (1 << acc_w), rq_acc)
    results = {"pe_vectors": int(len(data["a"])), "pe_mismatches": int((pe_acc != data["expected"]).sum()),
               "requant_vectors": n_rq, "requant_mismatches": int(((rq_y != data["y"]) | (rq_acc != data["acc"])).sum())}
    Path(manifest["results"]).write_text(json.dumps(results))
    assert results["pe_mismatches"] == 0 and results["requant_mismatches"] == 0, results
