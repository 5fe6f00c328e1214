"""Protocol B (prompt 256 + decode 4096) only, sampled as `thinkfast bench speed --quick` does:
    python -m thinkfast.benchmarks.bench_protocol_b OUT_DIR '[["hybrid-3b", [256, 512]]]'
Importing this module runs nothing; `main` does the work.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    import torch

    from thinkfast.benchmarks import roofline, speed
    from thinkfast.benchmarks.shapes import build_model

    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0])
    out.mkdir(parents=True, exist_ok=True)
    plan = json.loads(argv[1])
    hw = {"bandwidth": roofline.measure_copy_bandwidth(), "flops": roofline.measure_matmul_flops()}
    speed._cleanup()  # give the probes' buffers back, or the planner sees ~4 GB less (llama-3b B=256 then OOMs)
    res = {"gpu": torch.cuda.get_device_name(0), "hw": hw, "points": []}
    for name, batches in plan:
        model = build_model(name)
        numbers = roofline.model_numbers(model)
        pts = speed.sweep(model, name, numbers, hw, "B", 256, [4096], batches, speed.QUICK)
        res["points"] += pts
        for p in pts:
            print(name, p["batch"], "OOM" if p["oom"] else f"{p['tokens_per_s']:.0f} tok/s {p['latency_ms_per_step']:.2f} "
                  f"ms/step {p['fraction_of_bound']:.1%} of bound {p['bound_tokens_per_s']:.0f}", flush=True)
        del model
        speed._cleanup()
        (out / "bench_b.json").write_text(json.dumps(res, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
