"""`thinkfast generate`: sample completions from a student or a teacher with the batched engine."""

from __future__ import annotations

import json
import logging
import sys


def register(subparsers) -> None:
    from thinkfast.inference.params import DEFAULT_SSM_STATE_DTYPE, SSM_STATE_DTYPES, SamplingParams

    p = subparsers.add_parser("generate", help="sample completions with the batched engine")
    p.add_argument("--model", required=True, help="student directory, teacher hub name/dir/.gguf, or smollm2-135m")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", action="append", help="a prompt (repeatable)")
    src.add_argument("--prompts-file", help="text file, one prompt per line (or JSONL with a 'prompt' field)")
    p.add_argument("--n", type=int, default=1, help="samples per prompt")
    p.add_argument("--temperature", type=float, default=SamplingParams.temperature, help="0 = greedy")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--stop", action="append", default=[], help="stop string (repeatable)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--chat", action="store_true", help="wrap each prompt as a user message in the chat template")
    p.add_argument("--max-batch", type=int, default=None, help="decode slots (default: what fits in memory)")
    p.add_argument("--max-len", type=int, default=None, help="tokens per slot (default: longest prompt + max new)")
    p.add_argument("--dtype", default=None, choices=["float32", "bfloat16", "float16"],
                   help="default bfloat16 on GPU, float32 on CPU")
    p.add_argument("--ssm-state-dtype", default=DEFAULT_SSM_STATE_DTYPE, choices=list(SSM_STATE_DTYPES),
                   help="recurrent state of Mamba layers in the decode pool (bf16 halves its bytes; the step "
                        "still computes in fp32; see docs/engine.md)")
    p.add_argument("--device", default=None)
    p.add_argument("--no-cuda-graphs", action="store_true")
    p.add_argument("--out", default=None, help="JSONL output file (default: stdout)")
    p.set_defaults(func=run)


def _read_prompts(args) -> list[str]:
    """Prompts from --prompt, or from --prompts-file (plain lines, or JSONL with a "prompt" field);
    every problem with the file is one line naming it, before any model is loaded."""
    from pathlib import Path

    from thinkfast.errors import ThinkfastError

    if args.prompt:
        return list(args.prompt)
    path = Path(args.prompts_file).expanduser()
    if not path.is_file():
        raise ThinkfastError(f"prompts file {path} does not exist" if not path.exists() else f"prompts file {path} is not a file")
    prompts = []
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            line = line.rstrip("\n")
            if not line.strip():
                continue
            if line.lstrip().startswith("{"):
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as err:
                    raise ThinkfastError(f"{path}:{lineno} looks like JSON but is not valid JSON ({err.msg})") from None
                if not isinstance(record, dict) or "prompt" not in record:
                    fields = sorted(record) if isinstance(record, dict) else []
                    raise ThinkfastError(f"{path}:{lineno} has no \"prompt\" field (fields: {fields})")
                if not isinstance(record["prompt"], str) or not record["prompt"].strip():
                    raise ThinkfastError(f"{path}:{lineno}: \"prompt\" must be a non-empty string")
                line = record["prompt"]
            prompts.append(line.replace("\\n", "\n"))
    if not prompts:
        raise ThinkfastError(f"prompts file {path} holds no prompts (one per line, or JSONL with a \"prompt\" field)")
    return prompts


def run(args) -> int:
    from thinkfast.device import resolve_device, resolve_dtype
    from thinkfast.errors import ThinkfastError
    from thinkfast.inference.api import load_for_generation
    from thinkfast.inference.engine import Engine, check_request, encode_prompts
    from thinkfast.inference.params import SamplingParams, engine_max_len

    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s", stream=sys.stderr)
    prompts = _read_prompts(args)  # input errors before the model loads
    for flag, value in (("--n", args.n), ("--max-new-tokens", args.max_new_tokens), ("--max-batch", args.max_batch),
                        ("--max-len", args.max_len)):
        if value is not None and value < 1:
            raise ThinkfastError(f"{flag} must be >= 1, got {value}")
    device = str(resolve_device(args.device))
    dtype = resolve_dtype(args.dtype, device)
    model, tokenizer = load_for_generation(args.model, dtype=dtype, device=device)
    if tokenizer is None:
        raise ThinkfastError(f"{args.model} has no tokenizer saved next to it; text prompts need one")
    if args.chat:
        prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], tokenize=False,
                                                 add_generation_prompt=True) for p in prompts]
    params = SamplingParams(temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                            max_new_tokens=args.max_new_tokens, stop=args.stop, ignore_eos=args.ignore_eos,
                            seed=args.seed)
    params.validate()
    lengths = [len(ids) for ids in encode_prompts(tokenizer, prompts)]
    max_len = args.max_len or engine_max_len(args.max_new_tokens, lengths)
    # before any memory is allocated: prompts past the model's positions, or cut short by --max-len
    check_request(lengths, args.max_new_tokens, max_len, getattr(model.config, "max_position_embeddings", None),
                  strict=True)
    needed = len(prompts) * args.n  # decode slots: no more than this request can fill
    engine = Engine(model, tokenizer, max_batch=min(args.max_batch or needed, needed), max_len=max_len,
                    dtype=dtype, device=device, cuda_graphs=not args.no_cuda_graphs,
                    ssm_state_dtype=args.ssm_state_dtype)
    results = engine.generate(prompts, params, n=args.n)
    lines = [json.dumps({"prompt_index": c.prompt_index, "sample_index": c.sample_index, "prompt": prompts[c.prompt_index],
                         "text": c.text, "finish_reason": c.finish_reason, "num_tokens": len(c.token_ids)}) + "\n"
             for row in results for c in row]
    if args.out:
        from thinkfast.storage import atomic_write_text

        atomic_write_text(args.out, "".join(lines))  # whole or not at all
    else:
        sys.stdout.write("".join(lines))
    stats = engine.last_stats
    print(f"[thinkfast] {sum(len(r) for r in results)} completions; decode {stats['decode_tokens']} tokens in "
          f"{stats['decode_s']:.2f}s", file=sys.stderr)
    return 0
