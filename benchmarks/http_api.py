"""The HTTP API and the Gradio page against the model alone and a minimal Gradio app, in one run.

Three servers, each in its own process on 127.0.0.1: the real app with the API mounted beside it
(``ser.http_api.mount``), and a minimal Gradio app built here (the same ``gr.Audio`` input and
``gr.Label`` output, no model: Gradio's own floor). For one client and for 8 concurrent clients
it measures p50/p95 latency and requests/s of

* ``POST /api/v1/predict`` (httpx, the clip's bytes as the body),
* the app's Gradio ``/predict`` (gradio_client, as a program would call the page),
* the minimal Gradio app (gradio_client),

and the model-only rate (``Predictor.predict`` on the decoded clip in this process) measured in
the same run. Targets: API with 8 clients >= 0.6x model-only; the app's Gradio path within 1.2x
of the minimal app's p50 and rate.

    python benchmarks/http_api.py --requests 40
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
RESULTS = REPO / "benchmarks" / "results"
CLIP = REPO / "examples" / "angry.flac"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_app(port: int, store: str) -> None:
    """The real app and API, as ``python app.py`` serves them (no logins: the benchmark is local)."""
    from ser.http_api import serve
    from ser.ui import AppConfig, build_app

    config = AppConfig(store=Path(store), port=port, concurrency_limit=2)
    serve(build_app(config), config)


def serve_minimal(port: int) -> None:
    """Gradio's floor: the page's input and output components, no model."""
    import gradio as gr

    def predict(path: str) -> dict[str, float]:
        return {"neutral": 0.5, "angry": 0.5} if path else {}

    with gr.Blocks() as demo:
        audio = gr.Audio(type="filepath")
        label = gr.Label()
        gr.Button("Predict").click(predict, audio, label, api_name="predict")
    demo.queue(default_concurrency_limit=2, max_size=64)
    demo.launch(server_name="127.0.0.1", server_port=port, quiet=True, prevent_thread_lock=False)


def start(kind: str, port: int, store: str) -> subprocess.Popen:
    env = {**os.environ, "GRADIO_ANALYTICS_ENABLED": "False", "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    code = f"import benchmarks.http_api as b; b.serve_{kind}({port}{', ' + repr(store) if kind == 'app' else ''})"
    return subprocess.Popen([sys.executable, "-c", code], cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 300) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"server {url} exited: {process.stderr.read().decode()[-2000:]}")
        try:
            if httpx.get(url, timeout=5).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"server {url} did not start")


def measure(call_factory: Callable[[], Callable[[], Any]], clients: int, requests: int) -> dict[str, float]:
    """Latencies and rate of ``requests`` calls spread over ``clients`` threads (one client object each)."""
    calls = [call_factory() for _ in range(clients)]
    for call in calls:
        call()  # warm-up: connections, uploads, first compile
    latencies: list[float] = []
    lock = threading.Lock()
    per_client = max(1, requests // clients)

    def worker(call: Callable[[], Any]) -> None:
        for _ in range(per_client):
            start = time.perf_counter()
            call()
            with lock:
                latencies.append(time.perf_counter() - start)

    start = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(worker, calls))
    elapsed = time.perf_counter() - start
    latencies.sort()
    return {
        "requests": len(latencies),
        "p50_ms": round(1000 * statistics.median(latencies), 1),
        "p95_ms": round(1000 * latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))], 1),
        "req_per_s": round(len(latencies) / elapsed, 2),
    }


def api_call(url: str, data: bytes) -> Callable[[], Callable[[], Any]]:
    import httpx

    def factory() -> Callable[[], Any]:
        client = httpx.Client(timeout=120)

        def call() -> Any:
            response = client.post(f"{url}/api/v1/predict", content=data)
            response.raise_for_status()
            return response.json()

        return call

    return factory


def gradio_call(url: str, clip: Path, download: str) -> Callable[[], Callable[[], Any]]:
    from gradio_client import Client, handle_file

    def factory() -> Callable[[], Any]:
        client = Client(url, verbose=False, download_files=download)
        return lambda: client.predict(handle_file(str(clip)), api_name="/predict")

    return factory


def model_only_rate(seconds: float = 5.0) -> float:
    from ser.audio import SAMPLE_RATE, load_audio
    from ser.model import Predictor

    predictor = Predictor.from_pretrained(None)
    waveform = load_audio(CLIP)
    predictor.predict((SAMPLE_RATE, waveform))
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        predictor.predict((SAMPLE_RATE, waveform))
        n += 1
    return n / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=40, help="requests per measurement")
    parser.add_argument("--clients", type=int, default=8)
    args = parser.parse_args()
    data = CLIP.read_bytes()
    with tempfile.TemporaryDirectory() as tmp:
        ports = {"app": free_port(), "minimal": free_port()}
        servers = {kind: start(kind, port, str(Path(tmp) / "store")) for kind, port in ports.items()}
        try:
            urls = {kind: f"http://127.0.0.1:{port}" for kind, port in ports.items()}
            for kind, url in urls.items():
                wait_until_up(url + "/", servers[kind])
            paths = {
                "api": api_call(urls["app"], data),
                "app_gradio": gradio_call(urls["app"] + "/", CLIP, tmp),
                "minimal_gradio": gradio_call(urls["minimal"] + "/", CLIP, tmp),
            }
            results: dict[str, Any] = {"model_only_before": round(model_only_rate(), 2)}
            for name, factory in paths.items():
                for clients in (1, args.clients):
                    results[f"{name}_{clients}"] = measure(factory, clients, args.requests)
                    print(name, clients, results[f"{name}_{clients}"], flush=True)
            results["model_only_after"] = round(model_only_rate(), 2)
        finally:
            for server in servers.values():
                server.terminate()
                server.wait(timeout=30)
    model_only = (results["model_only_before"] + results["model_only_after"]) / 2
    many = args.clients
    summary = {
        "clip": CLIP.name,
        "clients": many,
        "model_only_req_per_s": round(model_only, 2),
        "api_over_model_only": round(results[f"api_{many}"]["req_per_s"] / model_only, 3),
        "app_gradio_p50_over_minimal": round(results["app_gradio_1"]["p50_ms"] / results["minimal_gradio_1"]["p50_ms"], 3),
        "minimal_rate_over_app_gradio": round(results[f"minimal_gradio_{many}"]["req_per_s"] / results[f"app_gradio_{many}"]["req_per_s"], 3),
        # The minimal app has no model: the app's path pays Gradio's floor plus the model. These two
        # take the model out, to show what the app adds beyond both (1.0: nothing).
        "app_gradio_p50_less_model_over_minimal": round(
            (results["app_gradio_1"]["p50_ms"] - 1000 / model_only) / results["minimal_gradio_1"]["p50_ms"], 3),
        "floor_plus_model_rate_over_app_gradio": round(
            1 / (1 / results[f"minimal_gradio_{many}"]["req_per_s"] + 1 / model_only)
            / results[f"app_gradio_{many}"]["req_per_s"], 3),
        "targets": {"api_over_model_only": ">= 0.6", "app_gradio_p50_over_minimal": "<= 1.2", "minimal_rate_over_app_gradio": "<= 1.2"},
        "load_average_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "http_api.json").write_text(json.dumps({"summary": summary, "measurements": results}, indent=2) + "\n")
    lines = [
        f"# HTTP: {CLIP.name}, 1 and {many} concurrent clients, all servers on this machine ({summary['cpus']} CPUs, load {summary['load_average_1min']})",
        "",
        "| path | clients | p50 ms | p95 ms | req/s |",
        "|---|---:|---:|---:|---:|",
    ]
    for name in paths:
        for clients in (1, many):
            row = results[f"{name}_{clients}"]
            lines.append(f"| {name} | {clients} | {row['p50_ms']} | {row['p95_ms']} | {row['req_per_s']} |")
    lines += [
        f"| model only (in process) | 1 | | | {model_only:.1f} |",
        "",
        f"- API with {many} clients / model only: **{summary['api_over_model_only']:.2f}** (target >= 0.6)",
        f"- app's Gradio p50 / minimal Gradio p50: **{summary['app_gradio_p50_over_minimal']:.2f}** (target <= 1.2)",
        f"- minimal Gradio rate / app's Gradio rate ({many} clients): **{summary['minimal_rate_over_app_gradio']:.2f}** (target <= 1.2)",
        f"- without the model's own time ({1000 / model_only:.0f} ms a clip): app's Gradio p50 less the model, over the minimal"
        f" app's p50: **{summary['app_gradio_p50_less_model_over_minimal']:.2f}**; the rate that Gradio's floor plus the model"
        f" allow ({many} clients), over the app's: **{summary['floor_plus_model_rate_over_app_gradio']:.2f}** (1.0: the app adds"
        " nothing beyond both)",
        "",
        "Written by `python benchmarks/http_api.py`.",
    ]
    (RESULTS / "http_api.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
