"""How much faster can lower precision make a wav2vec2-base-size model on *this* CPU?

A speed-up from int8 or bf16 is bounded by how much faster this processor multiplies matrices in
that precision than in fp32, and by how close eager fp32 already runs to the fp32 rate. This script
measures both in one run:

1. the multiply-accumulates (MACs) of one forward pass of wav2vec2-base on a 3 s clip
   (``torch.utils.flop_counter``), and eager fp32's time for it -> the rate eager achieves;
2. the best matrix-multiply rate of this CPU in fp32 and bf16 (PyTorch / oneDNN) and in int8
   (ONNX Runtime's ``MatMulInteger``, the kernel its dynamic quantization runs), on the model's own
   GEMM shapes and on a large square one;
3. the ceiling: a runtime that ran every MAC at the best int8 rate measured would be
   ``best int8 rate / eager's achieved rate`` times faster than eager.

    python benchmarks/cpu_ceiling.py [--seconds 3] [--repeats 20]

Writes benchmarks/results/cpu_ceiling.json and .md. Figures are from one run on one machine; the
ratios, not the absolute rates, are what carry over.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

RESULTS = Path(__file__).resolve().parent / "results"

def gemm_shapes(frames: int) -> dict[str, tuple[int, int, int]]:
    """(M, K, N) of one wav2vec2-base layer's products (768 wide, 3072 feed-forward), plus a large square
    one that shows each precision's best rate."""
    return {
        "attention projection (frames x 768 x 768)": (frames, 768, 768),
        "feed-forward up (frames x 768 x 3072)": (frames, 768, 3072),
        "feed-forward down (frames x 3072 x 768)": (frames, 3072, 768),
        "square 1024": (1024, 1024, 1024),
    }


def best_time(call: Callable[[], object], repeats: int) -> float:
    call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def torch_gemm_rate(m: int, k: int, n: int, dtype: torch.dtype, repeats: int) -> float:
    """GMAC/s of ``a @ b`` in ``dtype``."""
    a = torch.randn(m, k).to(dtype)
    b = torch.randn(k, n).to(dtype)
    with torch.inference_mode():
        seconds = best_time(lambda: a @ b, repeats)
    return m * k * n / seconds / 1e9


def ort_int8_gemm_rate(m: int, k: int, n: int, repeats: int) -> float:
    """GMAC/s of ONNX Runtime's ``MatMulInteger`` (uint8 activations x int8 weights)."""
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.integers(-127, 128, (k, n), dtype=np.int8), "w")
    graph = helper.make_graph(
        [helper.make_node("MatMulInteger", ["a", "w"], ["y"])],
        "gemm",
        [helper.make_tensor_value_info("a", TensorProto.UINT8, [m, k])],
        [helper.make_tensor_value_info("y", TensorProto.INT32, [m, n])],
        initializer=[weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    a = rng.integers(0, 256, (m, k), dtype=np.uint8)
    seconds = best_time(lambda: session.run(None, {"a": a}), repeats)
    return m * k * n / seconds / 1e9


def model_macs_and_eager_time(seconds: float, repeats: int) -> tuple[int, int, float]:
    """MACs of one wav2vec2-base forward pass on ``seconds`` of audio, its frames, and eager's median time."""
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import Wav2Vec2Config, Wav2Vec2ForSequenceClassification

    torch.manual_seed(0)
    model = Wav2Vec2ForSequenceClassification(Wav2Vec2Config(num_labels=7)).eval()
    audio = torch.randn(1, int(16000 * seconds)) * 0.1
    frames = int(model.wav2vec2._get_feat_extract_output_lengths(torch.tensor(audio.shape[1])))
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:  # not inference_mode: the weight-norm parametrization breaks under both
        model(audio)
    with torch.inference_mode():
        model(audio)
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            model(audio)
            times.append(time.perf_counter() - start)
    return counter.get_total_flops() // 2, frames, statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=RESULTS / "cpu_ceiling")
    args = parser.parse_args(argv)

    macs, frames, eager_s = model_macs_and_eager_time(args.seconds, args.repeats)
    eager_rate = macs / eager_s / 1e9
    gemms = []
    for name, (m, k, n) in gemm_shapes(frames).items():
        gemms.append({
            "gemm": name, "m": m, "k": k, "n": n,
            "fp32_gmacs": torch_gemm_rate(m, k, n, torch.float32, args.repeats),
            "bf16_gmacs": torch_gemm_rate(m, k, n, torch.bfloat16, args.repeats),
            "int8_gmacs": ort_int8_gemm_rate(m, k, n, args.repeats),
        })
    best = {p: max(g[f"{p}_gmacs"] for g in gemms) for p in ("fp32", "bf16", "int8")}
    results = {
        "machine": f"{os.cpu_count()} CPU cores ({platform.processor() or platform.machine()}), "
                   f"torch threads {torch.get_num_threads()}",
        "clip_seconds": args.seconds,
        "model": "wav2vec2-base (random weights, 7 labels)",
        "model_gmacs": macs / 1e9,
        "eager_fp32_ms": eager_s * 1000,
        "eager_fp32_gmacs_per_s": eager_rate,
        "gemms": gemms,
        "best_gmacs_per_s": best,
        "eager_share_of_best_fp32": eager_rate / best["fp32"],
        "ceiling_speedup": {p: best[p] / eager_rate for p in ("bf16", "int8")},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    table = render(results)
    args.out.with_suffix(".md").write_text(table, encoding="utf-8")
    print(table)
    return 0


def render(results: dict) -> str:
    lines = [
        "# What lower precision can buy on this CPU",
        "",
        (
            f"{results['machine']}. {results['model']}, {results['clip_seconds']:g} s clip: "
            f"{results['model_gmacs']:.1f} GMAC per forward pass; eager fp32 takes {results['eager_fp32_ms']:.0f} ms "
            f"= {results['eager_fp32_gmacs_per_s']:.0f} GMAC/s, {results['eager_share_of_best_fp32']:.0%} of the best "
            "fp32 matrix-multiply rate below."
        ),
        "",
        "| matrix product (M x K x N) | fp32 GMAC/s | bf16 GMAC/s | int8 GMAC/s (ORT MatMulInteger) |",
        "|---|---:|---:|---:|",
    ]
    for g in results["gemms"]:
        lines.append(f"| {g['gemm']} | {g['fp32_gmacs']:.0f} | {g['bf16_gmacs']:.0f} | {g['int8_gmacs']:.0f} |")
    ceiling = results["ceiling_speedup"]
    lines += [
        "",
        (
            f"Ceiling over eager fp32 if every MAC ran at the best rate measured: bf16 {ceiling['bf16']:.1f}x, "
            f"int8 {ceiling['int8']:.1f}x (no quantize/dequantize, no non-GEMM work, no memory stalls counted)."
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
