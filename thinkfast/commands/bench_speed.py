"""`thinkfast bench speed`: end-to-end decode throughput vs roofline and the HF peer (needs a GPU)."""

from __future__ import annotations

import logging

from thinkfast.commands.bench_group import get_bench_subparsers

PROTOCOL_HELP = (
    "which set of measurements: full (protocols A, B, C on every Llama shape), quick (fewer points), "
    "issue11 (Llama-3.2-1B shape, 512+512 at batch 256: our engine end to end vs every HF generate route; "
    "about 3-4 min on an H200), qwen (Qwen2.5-0.5B/1.5B shapes and hybrids, prompt 200 + 256/2048, batch 256/512), "
    "issue16 (qwen's points plus Llama-3B and its hybrid at 256+4096, batch 256/512: issue 16's targets in one run)"
)


def register(subparsers) -> None:
    from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE, SSM_STATE_DTYPES

    p = get_bench_subparsers(subparsers).add_parser(
        "speed", help="decode throughput of teachers, hybrids and pure students at real shapes (GPU)")
    p.add_argument("--out", required=True, help="directory for speed.json, speed.png, speed_roofline.png and speed.md")
    p.add_argument("--protocol", choices=["full", "quick", "issue11", "qwen", "issue16"], default=None, help=PROTOCOL_HELP)
    p.add_argument("--quick", action="store_true", help="same as --protocol quick")
    p.add_argument("--models", nargs="+", default=None,
                   help="subset of the protocol's models (names say the shape: llama-1b hybrid-1b pure-1b llama-3b "
                        "hybrid-3b pure-3b qwen-0.5b hybrid-qwen-0.5b qwen-1.5b hybrid-qwen-1.5b)")
    p.add_argument("--ssm-state-dtype", nargs="+", choices=list(SSM_STATE_DTYPES), default=[DEFAULT_SSM_STATE_DTYPE],
                   help="the engine's Mamba recurrent state; several (fp32 bf16) measure every model with Mamba "
                        "layers once per dtype in the same run and report the speed-ups (all-attention models run once)")
    p.add_argument("--no-peer", action="store_true", help="skip the HF transformers generate peer")
    p.add_argument("--peer-timeout", type=int, default=180, help="seconds allowed per peer route")
    p.set_defaults(func=run)


def run(args) -> int:
    from thinkfast.benchmarks.shapes import MODELS
    from thinkfast.benchmarks.speed import run_speed
    from thinkfast.errors import ThinkfastError

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    bad = [m for m in args.models or [] if m not in MODELS]
    if bad:
        raise ThinkfastError(f"unknown model(s) {bad}; choose from {list(MODELS)}")
    if args.quick and args.protocol not in (None, "quick"):
        raise ThinkfastError(f"--quick and --protocol {args.protocol} disagree; give one of them")
    results = run_speed(args.out, quick=args.quick, models=args.models, peer=not args.no_peer,
                        peer_timeout=args.peer_timeout, protocol=args.protocol, ssm_state_dtypes=args.ssm_state_dtype)
    print(f"wrote {args.out}/speed.json, speed.png, speed_roofline.png, speed.md in {results['elapsed_s']:.0f}s")
    for key, value in results["headline"].items():
        print(f"  {key}: {value}")
    for r in results["ssm_state_speedups"]:
        print(f"  {r['model']} {r['ssm_state_dtype']} SSM state vs {r['versus']}, B={r['batch']} {r['prompt']}+{r['gen']} "
              f"({r['method']}): {r['speedup']:.2f}x, bound ratio {r['bound_ratio']:.2f}x")
    return 0
