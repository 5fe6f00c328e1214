"""`thinkfast.benchmarks.scan_sass`: the scan's launches compiled for sm_90 and counted, on any machine.

Runs in a subprocess without TRITON_INTERPRET (this session's kernels are interpreted on a CPU machine and cannot
be compiled).  The F1 bound guards the SFU softplus: with the accurate-log softplus F1 took 202 instructions a
step (Triton 3.9), now 118."""

import json
import os
import subprocess
import sys

import pytest

from thinkfast.benchmarks.scan_sass import innermost_loops, tools_dir

pytestmark = pytest.mark.triton


def _have_cuda_tools() -> bool:
    return all((tools_dir() / tool).exists() for tool in ("ptxas", "nvdisasm", "cuobjdump"))


def test_innermost_loops_of_a_listing():
    sass = "\n".join([
        "        /*0000*/                   MOV R1, c[0x0][0x28] ;",
        ".L_x_1:",
        "        /*0010*/                   MUFU.EX2 R2, R3 ;",
        ".L_x_2:",
        "        /*0020*/                   FFMA R4, R2, R5, R4 ;",
        "        /*0030*/                   SHFL.BFLY PT, R6, R4, 0x1, 0x1f ;",
        "        /*0040*/               @P0 BRA `(.L_x_2) ;",
        "        /*0050*/                   LDG.E R7, desc[UR4][R8.64] ;",
        "        /*0060*/              @!P1 BRA `(.L_x_1) ;",
        "        /*0070*/                   EXIT ;",
        ".L_x_3:",
        "        /*0080*/                   BRA `(.L_x_3);",
    ])
    loops = innermost_loops(sass)
    assert len(loops) == 1  # .L_x_1 holds .L_x_2; the self-branch after EXIT is not a loop
    assert loops[0]["instructions"] == 3 and loops[0]["FFMA"] == 1 and loops[0]["SHFL"] == 1 and loops[0]["MUFU"] == 0


@pytest.mark.skipif(not _have_cuda_tools(), reason="Triton's ptxas / nvdisasm not installed (non-Linux wheel)")
def test_scan_launches_compile_and_count(tmp_path):
    env = dict(os.environ, TRITON_INTERPRET="0")
    proc = subprocess.run([sys.executable, "-m", "thinkfast.benchmarks.scan_sass", "--out", str(tmp_path)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "scan_sass.json").read_text())
    assert set(result["launches"]) == {"F1", "F3", "B1", "B3"}
    for launch, r in result["launches"].items():
        assert r["registers"] > 0 and r["loops"], launch
    f1 = result["launches"]["F1"]["loops"]
    assert len(f1) == 1 and f1[0]["MUFU"] >= 8  # one step loop; 8 exp2 of the decay per thread at least
    assert f1[0]["instructions"] <= 160, f1  # 202 with the accurate-log softplus
    assert len(result["launches"]["B3"]["loops"]) == 1  # B3's sub-tile loop: 4 forward and 4 reverse steps, unrolled
    assert (tmp_path / "scan_sass.md").read_text().startswith("# Scan launches' machine code")
