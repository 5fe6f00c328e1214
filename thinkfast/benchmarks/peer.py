"""The peer: HF transformers `generate` with a static cache, random weights at a benchmark shape.

Run in a subprocess by the speed benchmark (so a compile failure, OOM or hang is recorded and
never takes the benchmark down):

    python -m thinkfast.benchmarks.peer '{"size": "1b", "batch": 256, "prompt": 512, "gen": 512}'

Every route is measured and printed as one `PEER_RESULT {json}` line as soon as it is done; the
fastest route that worked is "the peer".  Routes:

  compile_config  static cache + `generation_config.compile_config = CompileConfig(fullgraph=True,
                  mode="reduce-overhead")`: generate compiles only the decode call (CUDA graphs).
  default         static cache and nothing else: transformers' own automatic compile of the decode
                  call with its default CompileConfig().
  plain           what a user types: `generate(ids, max_new_tokens=G, min_new_tokens=G,
                  do_sample=False, cache_implementation="static")` after two 8-token warm-up calls,
                  no `max_cache_len`.

Why the first version measured 3.1k tok/s where a plain call gave 7.5k: the static cache is sized
per call (prompt + max_new_tokens), so a short warm-up compiled graphs for a short cache and the
timed call built a bigger cache and compiled again *inside the timing*.  Here `max_cache_len` is
set to prompt + gen for the first two routes (warm-up shapes = timed shapes), and every route
counts dynamo compilations around the timed call: if one happened there, the call is timed again.

Timing: decode-only time = time(generate gen tokens) - time(generate 1 token) (prefill
excluded, as in our engine's figures); `end_to_end_tokens_per_s` keeps the whole call.
`compile_s` = first warm-up call - second warm-up call (same shapes), excluded from the figures.
On a device where transformers does not compile (CPU) the routes still run, uncompiled, and say so.
"""

from __future__ import annotations

import copy
import json
import sys
import time

ROUTES = ("compile_config", "default", "plain")
PEER_NAME = "transformers.generate (static cache)"
WARMUP_TOKENS = 8


def _transformers_version() -> str:
    import transformers

    return transformers.__version__


def build_model(size: str | dict, device: str = "cuda", dtype: str = "bfloat16"):
    """Random-weight HF model at a benchmark shape (`shapes.TEACHERS` key) or an explicit shape dict."""
    import torch

    from thinkfast.benchmarks.shapes import COMMON, TEACHERS

    shape = dict(TEACHERS[size]) if isinstance(size, str) else dict(size)
    family = shape.pop("family", "llama")
    shape.pop("label", None)
    fields = {**{k: v for k, v in COMMON.items() if k != "tie_word_embeddings"}, **shape}
    common = dict(
        vocab_size=fields["vocab_size"], hidden_size=fields["hidden_size"], intermediate_size=fields["intermediate_size"],
        num_hidden_layers=fields["num_hidden_layers"], num_attention_heads=fields["num_attention_heads"],
        num_key_value_heads=fields["num_key_value_heads"], head_dim=fields["head_dim"],
        tie_word_embeddings=shape.get("tie_word_embeddings", True),
        max_position_embeddings=fields["max_position_embeddings"], rms_norm_eps=fields["rms_norm_eps"],
        pad_token_id=0, bos_token_id=1, eos_token_id=2,
    )
    if family == "qwen2":
        from transformers import Qwen2Config as Config
        from transformers import Qwen2ForCausalLM as Model
    else:
        from transformers import LlamaConfig as Config
        from transformers import LlamaForCausalLM as Model
    config = Config(**common)
    try:
        config._attn_implementation = "sdpa"
    except Exception:  # noqa: BLE001  (older/newer config classes: the model picks its default)
        pass
    torch.manual_seed(0)
    with torch.device(device):
        model = Model(config)
    return model.to(getattr(torch, dtype)).eval()


def _sync(device) -> None:
    import torch

    if torch.device(device).type == "cuda":
        torch.cuda.synchronize()


def _compile_count() -> int | None:
    """Frames dynamo has compiled so far (None if this torch does not expose the counter)."""
    try:
        from torch._dynamo.utils import counters

        return int(sum(counters["frames"].values())) + int(counters["stats"].get("unique_graphs", 0))
    except Exception:  # noqa: BLE001
        return None


def _reset(model) -> None:
    """Forget every compiled graph and cache size from an earlier route."""
    import torch

    for attr in ("_compiled_call", "_last_compile_config", "_previous_max_cache_length"):
        if attr in model.__dict__:
            delattr(model, attr)
    try:
        torch._dynamo.reset()
    except Exception:  # noqa: BLE001
        pass
    if torch.cuda.is_available():
        try:  # the CUDA-graph pools of the last route's compiled call
            from torch._inductor.cudagraph_trees import reset_cudagraph_trees

            reset_cudagraph_trees()
        except Exception:  # noqa: BLE001
            pass
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def _supports_max_cache_len() -> bool:
    from transformers import GenerationConfig

    return "max_cache_len" in GenerationConfig().__dict__


def _test_compile_config(backend: str, fullgraph: bool):
    """A CompileConfig that compiles on any device with a cheap backend (tests on CPU: "eager")."""
    from transformers import CompileConfig

    config = CompileConfig(fullgraph=fullgraph, backend=backend, mode=None)
    config._compile_all_devices = True
    return config


def run_route(model, route: str, batch: int, prompt: int, gen: int, seed: int = 0,
              compile_backend: str | None = None) -> dict:
    """Measure one route on `model` (already on its device).  Raises on failure.

    `compile_backend` (tests only): compile with this torch.compile backend on any device, so the
    compile, warm-up and recompile checks run on a CPU; the routes keep their other settings."""
    import torch
    from transformers import CompileConfig

    if route not in ROUTES:
        raise ValueError(f"unknown route {route!r}; routes are {ROUTES}")
    _reset(model)
    device = next(model.parameters()).device
    base = copy.deepcopy(model.generation_config)
    gc = model.generation_config
    gc.pad_token_id = 0
    call_kwargs: dict = {}
    sized = False
    if route in ("compile_config", "default"):
        gc.cache_implementation = "static"
        if _supports_max_cache_len():
            gc.max_cache_len = prompt + gen  # one cache size for warm-up and timed calls
            sized = True
        if route == "compile_config":
            gc.compile_config = CompileConfig(fullgraph=True, mode="reduce-overhead")
    else:
        call_kwargs["cache_implementation"] = "static"
    if compile_backend:
        gc.compile_config = _test_compile_config(compile_backend, fullgraph=route == "compile_config")
    vocab = model.config.vocab_size
    gen_ids = torch.Generator().manual_seed(seed)
    ids = torch.randint(min(10, vocab - 1), min(1000, vocab), (batch, prompt), generator=gen_ids).to(device)
    mask = torch.ones_like(ids)

    def timed(new_tokens: int) -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            out = model.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                 do_sample=False, **call_kwargs)
        _sync(device)
        if out.shape[1] != prompt + new_tokens:
            raise RuntimeError(f"generate returned {out.shape[1] - prompt} new tokens, asked for {new_tokens}")
        return time.perf_counter() - start

    try:
        # warm-up: without max_cache_len a short call would compile a short cache, so warm at full length
        warm_tokens = WARMUP_TOKENS if (sized or route == "plain") else gen
        w1 = timed(warm_tokens)
        w2 = timed(warm_tokens)
        before = _compile_count()
        t_full = timed(gen)
        first_full = t_full
        recompiled = before is not None and _compile_count() != before
        if recompiled:  # a compile landed in the timed call: time it again, now warm
            before = _compile_count()
            t_full = timed(gen)
            still = _compile_count() != before
        else:
            still = False
        t_one = timed(1)  # prefill + first token (same cache size: nothing recompiles)
    finally:
        compiled = "_compiled_call" in model.__dict__
        model.generation_config = base
    decode_s = max(t_full - t_one, 1e-9)
    return {
        "ok": True, "peer": PEER_NAME, "route": route, "batch": batch, "prompt": prompt, "gen": gen,
        "tokens_per_s": batch * (gen - 1) / decode_s,
        "end_to_end_tokens_per_s": batch * gen / t_full,
        "first_timed_call_end_to_end_tokens_per_s": batch * gen / first_full,
        "decode_s": decode_s, "generate_s": t_full, "prefill_s": t_one,
        "compile_s": max(0.0, w1 - w2), "warmup_s": w1 + w2, "warmup_tokens": warm_tokens,
        "max_cache_len": (prompt + gen) if sized else None,
        "compile_config": (f"test backend {compile_backend}" if compile_backend else
                           {"fullgraph": True, "mode": "reduce-overhead"} if route == "compile_config"
                           else "transformers default CompileConfig()"),
        "compiled": compiled,
        "recompiled_in_timed_call": recompiled, "recompiled_again": still,
        "attn_implementation": getattr(model.config, "_attn_implementation", None),
        "device": str(device),
        "peak_memory_bytes": torch.cuda.max_memory_allocated() if device.type == "cuda" else None,
    }


def run(size, batch: int, prompt: int, gen: int, routes=ROUTES, device: str = "cuda", dtype: str = "bfloat16",
        emit=None, compile_backend: str | None = None) -> list[dict]:
    """Every route in turn on one model; a failed route is recorded and the next one still runs."""
    import torch

    model = build_model(size, device, dtype)
    label = size if isinstance(size, str) else "custom"
    results = []
    for route in routes:
        try:
            record = run_route(model, route, batch, prompt, gen, compile_backend=compile_backend)
        except Exception as err:  # noqa: BLE001  (recorded, never fatal)
            text = f"{type(err).__name__}: {str(err)[:400]}"
            record = {"ok": False, "peer": PEER_NAME, "route": route, "batch": batch, "prompt": prompt, "gen": gen,
                      "error": text, "oom": "out of memory" in text.lower()}
            _reset(model)
        record.update(size=label, transformers=_transformers_version(), torch=torch.__version__)
        results.append(record)
        if emit is not None:
            emit(record)
    return results


def best(records: list[dict]) -> dict | None:
    """The peer: the fastest route that worked."""
    ok = [r for r in records if r.get("ok")]
    return max(ok, key=lambda r: r["tokens_per_s"]) if ok else None


def main() -> None:
    args = json.loads(sys.argv[1])
    routes = args.pop("routes", None) or ([args.pop("route")] if "route" in args else list(ROUTES))
    run(args.pop("size"), routes=routes, emit=lambda r: print("PEER_RESULT " + json.dumps(r), flush=True), **args)


if __name__ == "__main__":
    main()
