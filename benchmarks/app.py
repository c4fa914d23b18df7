"""What the web app adds on top of the model: round-trip latency and throughput through gradio_client.

One real server on 127.0.0.1 (the shipped queue settings), driven like a page: upload a 3 s clip,
get the bars back. The model time of every request is measured inside the server (the app's own
``Predictor`` wrapped with a timer), so the overhead of a request is its round trip minus its own
model time: upload, queue, decoding, JSON and the client. The same ``Predictor.predict`` is also
timed in-process on an idle server as the baseline. Throughput is measured with 1, 4 and 16
clients sending requests back to back.

Run: ``python benchmarks/app.py [--model DIR] [--seconds-per-level 15]``; the default model is the
embedded one when it exists, else a tiny random wav2vec2 (plumbing cost only).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import gradio  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402

from ser.model import DEFAULT_MODEL_DIR, Predictor  # noqa: E402
from ser.ui import AppConfig, build_app  # noqa: E402
from tests.app_server import free_port, tone  # noqa: E402
from tests.tiny_models import LABELS, save_tiny_wav2vec2  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CLIP_S = 3.0
LEVELS = (1, 4, 16)


class TimedPredictor:
    """The app's predictor with every ``predict`` timed, so each request's model time is known exactly."""

    def __init__(self, predictor: Predictor) -> None:
        self._predictor = predictor
        self._lock = threading.Lock()
        self.model_times: list[float] = []

    def predict(self, audio: Any, **options: Any) -> dict[str, float]:
        start = time.perf_counter()
        probs = self._predictor.predict(audio, **options)
        with self._lock:
            self.model_times.append(time.perf_counter() - start)
        return probs

    def reset(self) -> None:
        with self._lock:
            self.model_times.clear()

    def times(self) -> list[float]:
        with self._lock:
            return list(self.model_times)

    def __getattr__(self, name: str) -> Any:  # labels, name, version, timeline, ...: the real predictor's
        return getattr(self._predictor, name)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary_ms(values: list[float]) -> dict[str, float]:
    return {"p50_ms": 1000 * statistics.median(values), "p95_ms": 1000 * percentile(values, 0.95)}


@contextmanager
def serving(config: AppConfig, predictor: TimedPredictor) -> Iterator[str]:
    app = build_app(config, predictor)  # type: ignore[arg-type]  # duck-typed: the app only calls Predictor's API
    port = free_port()
    app.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=port, quiet=True)
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def in_process_times(predictor: Predictor, clip: Path, repeats: int) -> list[float]:
    """``Predictor.predict`` on the same file (decoding included, as in the app), nothing else running."""
    predictor.predict(str(clip))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor.predict(str(clip))
        times.append(time.perf_counter() - start)
    return times


def client_loop(url: str, clip: Path, window: dict[str, float], max_requests: int, start: threading.Barrier) -> list[float]:
    """One page sending requests back to back until the window closes; returns each round trip's seconds."""
    client = Client(url, verbose=False, httpx_kwargs={"timeout": 120})
    client.predict(handle_file(clip), api_name="/predict")  # warm-up: connection and session
    start.wait()  # the barrier's action has opened the window
    times: list[float] = []
    while len(times) < max_requests and time.perf_counter() < window["until"]:
        began = time.perf_counter()
        client.predict(handle_file(clip), api_name="/predict")
        times.append(time.perf_counter() - began)
    return times


def run_level(url: str, clip: Path, timed: TimedPredictor, clients: int, seconds: float, max_requests: int) -> dict[str, Any]:
    """``clients`` pages at once for ``seconds`` (each finishes its request in flight at the end)."""
    window: dict[str, float] = {}

    def open_window() -> None:  # runs once, when every client is connected and warmed up
        timed.reset()
        window["began"] = time.perf_counter()
        window["until"] = window["began"] + seconds

    start = threading.Barrier(clients, action=open_window)
    with ThreadPoolExecutor(max_workers=clients) as pool:
        futures = [pool.submit(client_loop, url, clip, window, max_requests, start) for _ in range(clients)]
        latencies = [t for future in futures for t in future.result()]
    wall = time.perf_counter() - window["began"]
    model_times = timed.times()
    return {
        "clients": clients,
        "requests": len(latencies),
        "wall_s": wall,
        "throughput_rps": len(latencies) / wall,
        "latency": summary_ms(latencies),
        "model_in_server": summary_ms(model_times),
        "overhead": overhead_ms(latencies, model_times, paired=clients == 1),
    }


def overhead_ms(latencies: list[float], model_times: list[float], paired: bool) -> dict[str, float]:
    """Round trip minus model time. With one client each request pairs with its own model time; with
    several, requests finish out of order, so the overhead is the latency percentile minus the model's."""
    if paired and len(latencies) == len(model_times):
        return summary_ms([lat - mod for lat, mod in zip(latencies, model_times)])
    lat, mod = summary_ms(latencies), summary_ms(model_times)
    return {key: lat[key] - mod[key] for key in lat}


def markdown(meta: dict[str, Any], baseline: dict[str, dict[str, float]], rows: list[dict[str, Any]]) -> str:
    lines = [
        (
            f"App round trip (gradio_client, upload {CLIP_S:.0f} s clip -> bars), model `{meta['model']}` "
            f"(runtime {meta['runtime']}), concurrency limit {meta['concurrency_limit']}, "
            f"load average {meta['loadavg_before'][0]:.1f} before / {meta['loadavg_after'][0]:.1f} after on "
            f"{meta['cpus']} CPUs."
        ),
        "",
        (
            f"Baseline `Predictor.predict` in-process on the same clip, idle server: p50 {baseline['before']['p50_ms']:.0f} ms "
            f"(p95 {baseline['before']['p95_ms']:.0f} ms) before the runs, {baseline['after']['p50_ms']:.0f} ms "
            f"(p95 {baseline['after']['p95_ms']:.0f} ms) after; other jobs share this machine, so compare each "
            "request with its own model time (measured in the server) as the overhead columns do."
        ),
        "",
        "| clients | requests | throughput | latency p50 | latency p95 | model p50 (in server) | overhead p50 | overhead p95 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['clients']} | {r['requests']} | {r['throughput_rps']:.2f} req/s | {r['latency']['p50_ms']:.0f} ms | "
            f"{r['latency']['p95_ms']:.0f} ms | {r['model_in_server']['p50_ms']:.0f} ms | "
            f"{r['overhead']['p50_ms']:.0f} ms | {r['overhead']['p95_ms']:.0f} ms |"
        )
    return "\n".join(lines)


def pick_model(requested: str | None, tmp: Path) -> str:
    if requested:
        return requested
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return str(DEFAULT_MODEL_DIR)
    print("no embedded default model yet: using a tiny random wav2vec2 (measures the app's plumbing only)")
    return str(save_tiny_wav2vec2(tmp / "tiny-random-wav2vec2", LABELS))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="checkpoint dir (default: the embedded model, else a tiny random one)")
    parser.add_argument("--runtime", default=None, help="Predictor runtime (default: auto, as the app)")
    parser.add_argument("--seconds-per-level", type=float, default=15.0, help="how long each concurrency level runs")
    parser.add_argument("--max-requests", type=int, default=200, help="most requests per client per level")
    parser.add_argument("--baseline-repeats", type=int, default=30)
    parser.add_argument("--levels", type=int, nargs="*", default=list(LEVELS))
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        model = pick_model(args.model, tmp)
        predictor = Predictor.from_pretrained(model, runtime=args.runtime)
        timed = TimedPredictor(predictor)
        clip = tone(tmp / "clip.wav", CLIP_S, 220.0, rate=16000)
        config = AppConfig(model=model, store=tmp / "store", models_dir=tmp / "models")
        loadavg_before = os.getloadavg()
        with serving(config, timed) as url:
            baseline = {"before": summary_ms(in_process_times(predictor, clip, args.baseline_repeats))}
            rows = []
            for clients in args.levels:
                row = run_level(url, clip, timed, clients, args.seconds_per_level, args.max_requests)
                print(f"{clients:>2} clients: {row['throughput_rps']:.2f} req/s, latency p50 {row['latency']['p50_ms']:.0f} ms")
                rows.append(row)
            baseline["after"] = summary_ms(in_process_times(predictor, clip, args.baseline_repeats))
        meta = {
            "model": Path(model).name if Path(model).exists() else model,
            "model_path": model,
            "model_type": getattr(getattr(predictor.model, "config", None), "model_type", type(predictor.model).__name__),
            "model_version": predictor.version,
            "runtime": predictor.runtime,
            "clip_s": CLIP_S,
            "concurrency_limit": config.concurrency_limit,
            "queue_max_size": config.queue_max_size,
            "loadavg_before": loadavg_before,
            "loadavg_after": os.getloadavg(),
            "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "gradio": gradio.__version__,
            "python": platform.python_version(),
            "machine": platform.processor() or platform.machine(),
        }
    table = markdown(meta, baseline, rows)
    print("\n" + table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "app.json").write_text(json.dumps({"meta": meta, "baseline_in_process": baseline, "levels": rows}, indent=2))
    (args.out / "app.md").write_text(table + "\n")


if __name__ == "__main__":
    main()
