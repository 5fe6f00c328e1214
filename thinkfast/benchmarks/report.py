"""Speed benchmark output: PNG plots (matplotlib Agg) and a Markdown table."""

from __future__ import annotations

from pathlib import Path


def _fmt(x, spec=",.0f"):
    return "—" if x is None else format(x, spec)


def write_plots(results: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("A", "batch", "prompt 512 + gen 512"), ("B", "batch", "prompt 256 + decode 4096"),
              ("C", "gen", "prompt 256, batch 128")]
    fig, axes = plt.subplots(2, 3, figsize=(17, 9))
    for col, (protocol, xkey, title) in enumerate(panels):
        ax, axf = axes[0, col], axes[1, col]
        for model in results["models"]:
            pts = sorted((p for p in results["points"] if p["model"] == model and p["protocol"] == protocol),
                         key=lambda p: p[xkey])
            ok = [p for p in pts if not p["oom"]]
            if ok:
                line, = ax.plot([p[xkey] for p in ok], [p["tokens_per_s"] for p in ok], "o-", label=model)
                ax.plot([p[xkey] for p in pts], [p["bound_tokens_per_s"] for p in pts], ":", color=line.get_color(), alpha=0.6)
                axf.plot([p[xkey] for p in ok], [p["fraction_of_bound"] for p in ok], "o-", color=line.get_color(), label=model)
                for p in pts:
                    if p["oom"]:
                        ax.plot(p[xkey], p["bound_tokens_per_s"], "x", color=line.get_color(), markersize=10)
        for p in results["full"]:
            if p["protocol"] == protocol and not p["oom"]:
                ax.plot(p[xkey], p["tokens_per_s"], "s", color="black", markersize=5)
        if protocol == "A":
            for peer in results["peer"]:
                if peer.get("ok"):
                    ax.plot(peer["batch"], peer["tokens_per_s"], "*", markersize=14, label=f"HF generate {peer['size']}")
        for a in (ax, axf):
            a.set_xscale("log", base=2)
            a.set_xlabel(xkey)
            a.grid(alpha=0.3)
        ax.set_yscale("log")
        ax.set_ylabel("decode tokens/s")
        ax.set_title(f"{title}\n(dotted: roofline bound, x: does not fit, square: full run)", fontsize=9)
        axf.set_ylabel("fraction of roofline bound")
        axf.set_ylim(0, 1.05)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle(f"thinkfast engine decode throughput — {results['gpu']} — {results['date']}")
    fig.tight_layout()
    fig.savefig(out / "speed.png", dpi=110)
    plt.close(fig)


def write_markdown(results: dict, out: Path) -> None:
    lines = [
        f"# Decode speed — {results['gpu']}, {results['date']}",
        "",
        f"Command: `{results['command']}`  ",
        f"torch {results['torch']}, transformers {results.get('transformers', '?')}; measured D2D copy "
        f"{results['measured_copy_bandwidth_bytes_per_s'] / 1e12:.2f} TB/s (read+write), bf16 matmul "
        f"{results['measured_bf16_matmul_flops'] / 1e12:.0f} TFLOP/s. Prefill excluded; greedy; ignore_eos.",
        "",
        "| model | protocol | batch | prompt+gen | tok/s | ms/step | bound tok/s | of bound | method | note |",
        "|---|---|---:|---|---:|---:|---:|---:|---|---|",
    ]
    for p in results["points"] + results["full"]:
        note = p.get("reason", "") + (f" ({p['verified']})" if p.get("verified") else "")
        lines.append(
            f"| {p['model']} | {p['protocol']} | {p['batch']} | {p['prompt']}+{p['gen']} | "
            f"{'OOM' if p['oom'] else _fmt(p['tokens_per_s'])} | {_fmt(p.get('latency_ms_per_step'), '.2f')} | "
            f"{_fmt(p['bound_tokens_per_s'])} | {_fmt(p.get('fraction_of_bound'), '.0%')} | {p.get('method', '')} | {note} |"
        )
    if results["peer"]:
        lines += ["", "Peer (HF transformers generate, static cache, torch.compile, 512+512):", "",
                  "| size | batch | tok/s | note |", "|---|---:|---:|---|"]
        for peer in results["peer"]:
            lines.append(f"| {peer['size']} | {peer['batch']} | {_fmt(peer.get('tokens_per_s'))} | "
                         f"{'' if peer.get('ok') else peer.get('error', '')[:120]} |")
    if results.get("headline"):
        lines += ["", "Headline figures:", ""]
        lines += [f"- {k}: {v if not isinstance(v, float) else format(v, '.3g')}" for k, v in results["headline"].items()]
    (out / "speed.md").write_text("\n".join(lines) + "\n")
