"""Instructions per time step of the Mamba-1 scan's launches, read from their machine code (no GPU needed).

    python -m thinkfast.benchmarks.scan_sass --out DIR [--solver seq|tile] [--arch 90]

Compiles the scan's four walking launches (F1 local chunk states, F3 outputs, B1 local adjoints, B3 gradients;
`thinkfast/ops/triton/selective_scan.py`) for one CUDA architecture with Triton's own ptxas, disassembles them
with the nvdisasm that Triton ships, and counts the instructions of every innermost loop: per loop iteration,
by kind (MUFU: exp2 / log2 / reciprocal on the special-function unit; SHFL: warp shuffles of the reductions;
LDG / STG: global loads and stores; FFMA / FMUL / FADD), plus the registers per thread. The compiled kernels
see the specialisation the launch sees at the papers' shapes (every pointer and integer argument divisible by
16), which is what decides their register layout; flags are those of a bf16 training call of the 3B hybrid's
Mamba-1 layer (z gate, D, dt bias, softplus, no resets; 16 channels per B/C group, d_state 16).

One warp runs one program, so an iteration of a per-step loop is one (program, time step): on an H200 the
forward launches ran at about 0.8 instructions per cycle per scheduler (docs/kernels.md), so these counts predict
their time; a launch that runs slower than its count predicts waits on memory instead.

Writes DIR/scan_sass.json and DIR/scan_sass.md. Needs Triton's CUDA backend (Linux wheels ship ptxas and
nvdisasm) and a process without TRITON_INTERPRET (interpreted kernels cannot be compiled).
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import subprocess
import tempfile
from pathlib import Path

KINDS = ("MUFU", "SHFL", "LDG", "STG", "FFMA", "FMUL", "FADD")
BF16_ARGS = {"x_ptr", "dt_ptr", "z_ptr", "B_ptr", "C_ptr", "y_ptr", "dy_ptr", "dx_ptr", "ddt_ptr", "dz_ptr",
             "dB_ptr", "dC_ptr"}
COMMON = dict(CPG=16, N=16, HAS_Z=True, HAS_BIAS=True, SOFTPLUS=True, HAS_RESET=False, HAS_D=True)
LAUNCHES = {  # launch -> (kernel role, flags), as SelectiveScanFn passes them for a multi-chunk sequence
    "F1": ("fwd", dict(HAS_HIN=False, LOCAL=True, WRITE_HOUT=False, STORE_STATES=False, STORE_Q=False)),
    "F3": ("fwd", dict(HAS_HIN=True, LOCAL=False, WRITE_HOUT=True, STORE_STATES=True, STORE_Q=True)),
    "B1": ("bwd_local", dict()),
    "B3": ("bwd", dict(HAS_W=True)),
}
_INSTR = re.compile(r"\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P\w+\s+)?([A-Z][A-Z0-9_]*)")


def tools_dir() -> Path:
    """Where Triton's CUDA backend keeps ptxas, nvdisasm and cuobjdump."""
    import triton

    return Path(triton.__file__).parent / "backends" / "nvidia" / "bin"


def _tool(name: str) -> str:
    path = tools_dir() / name
    if not path.exists():
        raise SystemExit(f"scan_sass: {path} not found; it needs Triton's CUDA backend (Linux wheels ship it)")
    return str(path)


def innermost_loops(sass: str) -> list[dict]:
    """Every innermost loop of a disassembly (a label, a backward branch to it, no loop inside): its
    instruction count and the counts of KINDS, in program order."""
    lines = sass.splitlines()
    labels, loops = {}, []
    for i, line in enumerate(lines):
        m = re.match(r"^(\.L_x_\d+):", line)
        if m:
            labels[m.group(1)] = i
        m = re.search(r"BRA `\((\.L_x_\d+)\)", line)
        if m and labels.get(m.group(1), i) < i:
            loops.append((labels[m.group(1)], i))
    inner = [(a, b) for a, b in loops if not any(a <= c and d <= b and (c, d) != (a, b) for c, d in loops)]
    out = []
    for a, b in inner:
        ops = collections.Counter(m.group(1) for m in map(_INSTR.match, lines[a:b + 1]) if m)
        if sum(ops.values()) > 1:  # the one-instruction self-branch after EXIT is not a loop of the kernel
            out.append(dict(instructions=sum(ops.values()), **{k: ops[k] for k in KINDS}))
    return out


def _resources(cubin: Path) -> tuple[int, int]:
    """(registers per thread, stack bytes per thread: register spills land there)."""
    usage = subprocess.run([_tool("cuobjdump"), "--dump-resource-usage", str(cubin)], capture_output=True,
                           text=True, check=True).stdout
    stack = re.search(r"STACK:(\d+)", usage)
    return int(re.search(r"REG:(\d+)", usage).group(1)), int(stack.group(1)) if stack else 0


def compile_launch(kernel, constexprs: dict, num_warps: int, arch: int, max_registers: int | None = None):
    """The kernel compiled for sm_<arch> as a launch at the papers' shapes would compile it."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    constexprs = {k: v for k, v in constexprs.items() if k in kernel.arg_names}
    signature = {}
    for name in kernel.arg_names:
        if name in constexprs:
            signature[name] = "constexpr"
        elif name.endswith("_ptr"):
            signature[name] = "*bf16" if name in BF16_ARGS else ("*u8" if name == "rs_ptr" else "*fp32")
        else:
            signature[name] = "i32"
    attrs = {(i,): [["tt.divisibility", 16]] for i, name in enumerate(kernel.arg_names)
             if signature[name] != "constexpr"}
    src = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    options = dict(num_warps=num_warps, **({"maxnreg": max_registers} if max_registers else {}))
    return triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)


def analyse(solver: str = "seq", arch: int = 90) -> dict:
    from thinkfast.ops.triton import selective_scan as scan
    from thinkfast.ops.triton import selective_scan_seq as seq
    from thinkfast.ops.triton._common import interpreting

    if interpreting():
        raise SystemExit("scan_sass: run it without TRITON_INTERPRET (interpreted kernels cannot be compiled)")
    kernels = {"seq": dict(fwd=seq._ss_fwd_seq_kernel, bwd_local=seq._ss_bwd_local_seq_kernel, bwd=seq._ss_bwd_seq_kernel),
               "tile": dict(fwd=scan._ss_fwd_kernel, bwd_local=scan._ss_bwd_local_kernel, bwd=scan._ss_bwd_kernel)}
    solver, T, CL, warps = scan._config(COMMON["CPG"], COMMON["N"], 4096, 4, 192, solver=solver)
    result = dict(solver=solver, arch=f"sm_{arch}", sub_tile=T, chunk_len=CL, num_warps=warps, launches={})
    with tempfile.TemporaryDirectory() as tmp:
        for launch, (role, flags) in LAUNCHES.items():
            # B3 of the seq solver runs with a register cap (scan.SEQ_B3_MAX_REGISTERS), compiled with it here too
            cap = scan.SEQ_B3_MAX_REGISTERS if solver == "seq" and launch == "B3" else None
            compiled = compile_launch(kernels[solver][role], dict(COMMON, T=T, **flags), warps, arch, cap)
            cubin = Path(tmp) / f"{launch}.cubin"
            cubin.write_bytes(compiled.asm["cubin"])
            sass = subprocess.run([_tool("nvdisasm"), "-c", str(cubin)], capture_output=True, text=True,
                                  check=True).stdout
            registers, stack = _resources(cubin)
            result["launches"][launch] = dict(registers=registers, stack_bytes=stack, loops=innermost_loops(sass))
    return result


def markdown(result: dict) -> str:
    lines = [f"# Scan launches' machine code ({result['solver']} solver, {result['arch']})", "",
             f"Sub-tile {result['sub_tile']}, chunk length {result['chunk_len']}, {result['num_warps']} warp(s) per "
             "program; bf16 3B-layer training flags. Instructions per iteration of each innermost loop.", "",
             "| launch | registers | spill stack (B) | loop | instructions | " + " | ".join(KINDS) + " |",
             "|---|---:|---:|---:|---:|" + "---:|" * len(KINDS)]
    for launch, r in result["launches"].items():
        for i, loop in enumerate(r["loops"]):
            lines.append(f"| {launch} | {r['registers']} | {r['stack_bytes']} | {i + 1} | {loop['instructions']} | "
                         + " | ".join(str(loop[k]) for k in KINDS) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True)
    ap.add_argument("--solver", default="seq", choices=["seq", "tile"])
    ap.add_argument("--arch", type=int, default=90, help="CUDA compute capability x10 (90: H100 / H200)")
    a = ap.parse_args(argv)
    result = analyse(a.solver, a.arch)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "scan_sass.json").write_text(json.dumps(result, indent=1))
    (out / "scan_sass.md").write_text(markdown(result))
    print(markdown(result), end="")


if __name__ == "__main__":
    main()
