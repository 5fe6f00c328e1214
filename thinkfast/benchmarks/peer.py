"""The peer: HF transformers `generate` with a static cache and torch.compile, random Llama weights.

Run in a subprocess by the speed benchmark (so a compile failure, OOM or hang is recorded and
never takes the benchmark down):  python -m thinkfast.benchmarks.peer '{"size": "1b", ...}'
Prints one JSON line.  Decode-only time = time(generate G tokens) - time(generate 1 token).

How it is compiled (route "hf", the default): transformers' own route — static cache plus
`generation_config.compile_config`, under which `generate` compiles only the decode-step
call (mode "reduce-overhead": CUDA graphs) and copies the logits out of the graph's output
before the next replay.  The first version wrapped `model.forward` in torch.compile itself:
`generate` then compiled that again, the uncompiled prefill and the cudagraph'd forward
shared one cudagraph tree, and a later replay overwrote an output still in use
("accessing tensor output of CUDAGraphs that has been overwritten by a subsequent run").
Route "manual" (fallback if "hf" fails): our own torch.compile of the forward with
auto-compile disabled, `cudagraph_mark_step_begin()` before every call and the logits cloned.
"""

from __future__ import annotations

import json
import sys
import time


def run(size: str, batch: int, prompt: int, gen: int, route: str = "hf") -> dict:
    import torch
    from transformers import CompileConfig, LlamaConfig, LlamaForCausalLM

    from thinkfast.benchmarks.shapes import COMMON, TEACHERS

    shape = TEACHERS[size]
    config = LlamaConfig(
        vocab_size=COMMON["vocab_size"], hidden_size=shape["hidden_size"], intermediate_size=shape["intermediate_size"],
        num_hidden_layers=shape["num_hidden_layers"], num_attention_heads=shape["num_attention_heads"],
        num_key_value_heads=shape["num_key_value_heads"], head_dim=shape["head_dim"], tie_word_embeddings=True,
        max_position_embeddings=COMMON["max_position_embeddings"],
    )
    with torch.device("cuda"):
        model = LlamaForCausalLM(config).to(torch.bfloat16).eval()
    model.generation_config.cache_implementation = "static"
    model.generation_config.pad_token_id = 0
    if route == "hf":
        model.generation_config.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
    else:
        model.generation_config.disable_compile = True
        compiled = torch.compile(model.forward, mode="reduce-overhead", fullgraph=True)

        def forward(*args, **kwargs):
            torch.compiler.cudagraph_mark_step_begin()
            out = compiled(*args, **kwargs)
            out.logits = out.logits.clone()
            return out

        model.forward = forward
    ids = torch.randint(10, 1000, (batch, prompt), device="cuda")
    mask = torch.ones_like(ids)

    def timed(new_tokens: int) -> float:
        torch.cuda.synchronize()
        start = time.perf_counter()
        with torch.no_grad():
            model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                           do_sample=False)
        torch.cuda.synchronize()
        return time.perf_counter() - start

    t0 = time.perf_counter()
    timed(4)  # compiles prefill and decode graphs
    timed(4)
    compile_s = time.perf_counter() - t0
    t_prefill = timed(1)
    t_full = timed(gen)
    decode_s = max(t_full - t_prefill, 1e-9)
    return {"ok": True, "route": route, "decode_s": decode_s, "tokens_per_s": batch * (gen - 1) / decode_s, "prefill_s": t_prefill,
            "compile_s": compile_s, "peak_memory_bytes": torch.cuda.max_memory_allocated()}


def main() -> None:
    args = json.loads(sys.argv[1])
    routes = [args.pop("route")] if "route" in args else ["hf", "manual"]
    errors = []
    result = {}
    for route in routes:
        try:
            result = run(**args, route=route)
            break
        except Exception as err:  # recorded by the caller, never fatal
            errors.append(f"{route}: {type(err).__name__}: {str(err)[:400]}")
            result = {"ok": False, "error": " | ".join(errors), "oom": "out of memory" in str(err).lower()}
            if result["oom"]:
                break
            import torch

            torch.cuda.empty_cache()
    if result.get("ok") and errors:
        result["failed_routes"] = errors
    print("PEER_RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
