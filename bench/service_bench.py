"""The networked service under load: `fedvault serve` with many clients over loopback HTTP.

Setup: one server process (the real app: ``federation.service.app`` + ``RoundManager`` + SQLite,
served by uvicorn) whose model is a flat vector of d parameters (d = 100,000; no training, so
the numbers are the service's, not the learner's); N = 100 clients as asyncio tasks in ONE bench
process (their CPU work runs in a 2-thread pool), each with its own Ed25519 identity, enrolment
token and SecAgg+ state machine, signing every request. Per round each client downloads the model,
encodes a random clipped update with the round's lattice codec (rotation pads d to m = 2^17 =
131,072 coordinates), and runs the five SecAgg+ stages over HTTP.

Measured per round: latency (the server's round start to commit), server CPU seconds (the
server process's own ``time.process_time`` over the round, recorded in the round's audit entry),
and bytes on the wire per client (request and response bodies plus HTTP header lines, from the
client side). Side by side, in the same run: the same secure sum in process
(``secagg.simulate.simulate_round`` on the same N, m, k, t, b, plus the same encodes), so the
ratio is the price of HTTP, signatures, journaling, deadlines and storage.

Caveat (stated in the results): all 100 clients share one process and the machine's cores with
the server, so latency includes every client's CPU work serialized; on real deployments clients
compute in parallel on their own machines.

    python bench/service_bench.py            # N = 100, d = 100,000, 5 rounds
    python bench/service_bench.py --quick    # N = 20, d = 20,000, 2 rounds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "out"
OPERATOR = "operator-token-for-the-bench-0123456789"


class FlatModel:
    """A model that is only its (d,) float32 parameter vector (the server needs no learner here)."""

    def __init__(self, dimension: int) -> None:
        self._flat = np.zeros(dimension, np.float32)

    @property
    def parameter_count(self) -> int:
        return self._flat.size

    def flat(self) -> np.ndarray:
        return self._flat.copy()

    def load_flat(self, vector) -> None:
        self._flat = np.asarray(vector, dtype=np.float32).copy()

    def apply_update(self, mean_update, server_learning_rate: float) -> None:
        self._flat = self._flat + np.float32(server_learning_rate) * np.asarray(mean_update, np.float32)

    def evaluate(self) -> tuple[float, float]:
        return 0.0, float(np.linalg.norm(self._flat))  # (no test set) the model's norm as its "loss"


# --- the server process ------------------------------------------------------------------------


def serve(work: Path, port: int, clients: int, dimension: int, rounds: int) -> None:
    import uvicorn

    from federation.config import RunConfig
    from federation.service.app import create_app
    from federation.service.auth import enrolment_token
    from federation.service.rounds import RoundManager, ServiceSettings
    from federation.service.state import StateDirectory
    from storage.repositories import Repository

    os.environ["FEDVAULT_OPERATOR_TOKEN"] = OPERATOR
    config = RunConfig(dataset="digits", clients=clients, rounds=rounds, noise="none", history=False,
                       clip_norm=1.0, dropout_rate=0.05)
    repository = Repository.open(str(work / "service.db"))
    run_id = repository.create_run(config.to_dict(), name="service bench").id
    state = StateDirectory(work / "state")
    manager = RoundManager(repository, run_id, state, ServiceSettings(
        min_clients=clients, train_timeout=600, stage_timeout=600, online_window=600), model=FlatModel(dimension))
    secrets = state.secrets()
    tokens = {str(c): enrolment_token(secrets.enrolment_key, run_id, c) for c in range(clients)}
    (work / "tokens.json").write_text(json.dumps(tokens))
    app = create_app(manager, server_secrets=secrets)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False, timeout_keep_alive=65)


# --- the clients -------------------------------------------------------------------------------


class WireCounter:
    """Bytes on the wire of one client: bodies plus request/status/header lines."""

    def __init__(self) -> None:
        self.sent = 0
        self.received = 0

    def request(self, method: str, target: str, headers: dict, body: bytes) -> None:
        self.sent += len(method) + len(target) + 11 + sum(len(k) + len(v) + 4 for k, v in headers.items()) + 2
        self.sent += len(body)

    def response(self, response) -> None:
        self.received += 15 + sum(len(k) + len(v) + 4 for k, v in response.headers.items()) + 2
        self.received += len(response.content)


async def run_client(client_id: int, url: str, token: str, run_id: int, pool: ThreadPoolExecutor,
                     counter: WireCounter, http) -> None:
    import base64

    import httpx

    from federation.round_plan import RoundPlan
    from federation.service.auth import sign_request
    from federation.service.routes import stage_path
    from secagg.client import SecAggClient
    from secagg.keys import IdentityKey
    from secagg.modular import wrap
    from secagg.stages import ADVERTISE_KEYS
    from unlearning.secrets import generate_history_secret, history_commitment

    loop = asyncio.get_running_loop()
    identity = IdentityKey.generate()
    rng = np.random.default_rng(client_id)  # the synthetic update: test data, not a secret

    async def call(method: str, target: str, body: bytes = b"", content_type: str = "application/octet-stream"):
        for attempt in range(5):  # like the real client: a fresh signature per attempt
            headers = sign_request(identity, run_id=run_id, client_id=client_id, method=method, target=target,
                                   body=body)
            headers["Content-Type"] = content_type
            counter.request(method, target, headers, body)
            try:
                response = await http.request(method, target, content=body, headers=headers)
                break
            except httpx.TransportError:
                if attempt == 4:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
        counter.response(response)
        if response.status_code >= 400:
            raise RuntimeError(f"client {client_id}: {method} {target}: {response.status_code} {response.text}")
        return response

    commitment = history_commitment(run_id, client_id, generate_history_secret())
    body = json.dumps({"client_id": client_id, "enrolment_token": token,
                       "identity_public_key": identity.public_bytes.hex(),
                       "history_commitment": commitment.hex()}).encode()
    await call("POST", "/v1/enrol", body, "application/json")
    version, secagg = None, None
    while True:
        target = f"/v1/clients/{client_id}/task" + (f"?after_version={version}&wait=20" if version is not None else "")
        task = (await call("GET", target)).json()
        version = task["version"]
        if task["run_status"] == "completed" and task["round_index"] is None:
            return
        if task["request"] is None:
            continue
        round_index, stage = task["round_index"], task["stage"]
        request = base64.b64decode(task["request"])
        if stage == ADVERTISE_KEYS:
            plan = RoundPlan.from_bytes(base64.b64decode(task["plan"]))
            await call("GET", f"/v1/rounds/{round_index}/model")
            keys = (await call("GET", "/v1/directory")).json()["identity_keys"]
            secagg = SecAggClient(client_id, identity, {int(c): bytes.fromhex(k) for c, k in keys.items()})

            def encode(plan=plan):
                update = rng.normal(size=plan.dimension)
                update *= min(1.0, plan.clip_norm / np.linalg.norm(update))
                return wrap(plan.codec().encode(update, plan.round_seed, client_id), plan.bits)

            vector = await loop.run_in_executor(pool, encode)
            report = json.dumps({"num_samples": 100, "train_loss": 0.0}).encode()
            await call("POST", f"/v1/rounds/{round_index}/report", report, "application/json")
            reply = await loop.run_in_executor(pool, secagg.handle, request)
            secagg.set_input(vector)
        else:
            reply = await loop.run_in_executor(pool, secagg.handle, request)
        await call("POST", stage_path(round_index, stage), reply)


async def run_fleet(url: str, clients: int, tokens: dict, run_id: int) -> list[WireCounter]:
    import httpx

    counters = [WireCounter() for _ in range(clients)]

    unused_tls = ssl.create_default_context()  # plain HTTP on loopback; one context, not 100

    async def one(client_id: int) -> None:
        # One connection pool per client, as on separate machines (a shared pool of 100
        # connections costs httpcore O(connections) per request).
        async with httpx.AsyncClient(base_url=url, timeout=600, verify=unused_tls) as http:
            await run_client(client_id, url, tokens[str(client_id)], run_id, pool, counters[client_id], http)

    with ThreadPoolExecutor(2) as pool:
        await asyncio.gather(*(one(c) for c in range(clients)))
    return counters


# --- the in-process peer -----------------------------------------------------------------------


def in_process_round(clients: int, dimension: int, neighbours: int, threshold: int, bits: int, plan_bytes: bytes):
    """The same secure sum with every party in this process: encodes + ``simulate_round``."""
    from federation.round_plan import RoundPlan
    from secagg.modular import wrap
    from secagg.simulate import simulate_round

    plan = RoundPlan.from_bytes(plan_bytes)
    started = time.perf_counter()
    vectors = {}
    for client_id in range(clients):
        update = np.random.default_rng(client_id).normal(size=dimension)
        update *= min(1.0, plan.clip_norm / np.linalg.norm(update))
        vectors[client_id] = wrap(plan.codec().encode(update, plan.round_seed, client_id), bits)
    simulate_round(vectors, bits, neighbours_k=neighbours, threshold=threshold)
    return time.perf_counter() - started


# --- main --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="N = 20, d = 20,000, 2 rounds")
    parser.add_argument("--clients", type=int, default=None)
    parser.add_argument("--dimension", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--serve", nargs=5, metavar=("WORK", "PORT", "CLIENTS", "DIMENSION", "ROUNDS"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        work, port, clients, dimension, rounds = args.serve
        serve(Path(work), int(port), int(clients), int(dimension), int(rounds))
        return
    clients = args.clients or (20 if args.quick else 100)
    dimension = args.dimension or (20_000 if args.quick else 100_000)
    rounds = args.rounds or (2 if args.quick else 5)
    import httpx

    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = subprocess.Popen([sys.executable, __file__, "--serve", str(work), str(port), str(clients),
                                   str(dimension), str(rounds)], cwd=ROOT)
        try:
            deadline = time.monotonic() + 120
            while True:
                try:
                    info = httpx.get(f"{url}/v1/run", timeout=2).json()
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("the bench server did not start")
                    time.sleep(0.2)
            tokens = json.loads((work / "tokens.json").read_text())
            started = time.perf_counter()
            counters = asyncio.run(run_fleet(url, clients, tokens, info["run_id"]))
            wall = time.perf_counter() - started
            auth = {"Authorization": f"Bearer {OPERATOR}"}
            rounds_info = httpx.get(f"{url}/v1/operator/rounds", headers=auth).json()
            audit = httpx.get(f"{url}/v1/operator/audit", params={"event": "round.committed"}, headers=auth).json()
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
    latencies = [(_time(r["finished_at"]) - _time(r["started_at"])) for r in rounds_info]
    cpu = [e["payload"]["details"]["server_cpu_seconds"] for e in audit]
    first = rounds_info[0]["parameters"]
    neighbours, threshold, bits = first["neighbours"], first["threshold"], first["bits"]
    coordinates = info["coordinates"]
    plan_probe = _plan_bytes(first, dimension, bits)
    peer = [in_process_round(clients, dimension, neighbours, threshold, bits, plan_probe) for _ in range(2)]
    sent = [c.sent / rounds for c in counters]
    received = [c.received / rounds for c in counters]
    result = {
        "clients": clients, "dimension": dimension, "coordinates": coordinates, "bits": bits,
        "neighbours": neighbours, "threshold": threshold, "rounds": rounds,
        "statuses": [r["status"] for r in rounds_info],
        "round_latency_s": latencies, "round_latency_median_s": statistics.median(latencies),
        "round_latency_p95_s": _p95(latencies),
        "server_cpu_s_per_round": cpu, "server_cpu_median_s": statistics.median(cpu),
        "upload_bytes_per_client_per_round": statistics.mean(sent),
        "download_bytes_per_client_per_round": statistics.mean(received),
        "masked_vector_bytes": -(-coordinates * bits // 8), "float32_model_bytes": 4 * dimension,
        "in_process_round_s": peer, "in_process_round_median_s": statistics.median(peer),
        "wall_s": wall, "cpu_count": os.cpu_count(),
    }
    result["latency_ratio_service_vs_in_process"] = (result["round_latency_median_s"]
                                                     / result["in_process_round_median_s"])
    OUT.mkdir(parents=True, exist_ok=True)
    name = "service-quick.json" if args.quick else "service.json"
    (OUT / name).write_text(json.dumps(result, indent=2))
    print(render(result))
    print(f"\nwrote {OUT / name}")


def _plan_bytes(parameters: dict, dimension: int, bits: int) -> bytes:
    from federation.round_plan import NoiseShare, RoundPlan

    return RoundPlan(round_index=0, round_seed=bytes.fromhex(parameters["round_seed"]), dimension=dimension,
                     lattice=parameters["lattice"], step=parameters["step"], bits=bits,
                     clip_norm=parameters["clip_norm"], noise=NoiseShare()).to_bytes()


def _time(text: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(text).timestamp()


def _p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(0.95 * (len(ordered) - 1))))]


def render(r: dict) -> str:
    rows = [
        ("clients N (asyncio tasks, one process)", f"{r['clients']}"),
        ("model d / masked coordinates m", f"{r['dimension']:,} / {r['coordinates']:,} at {r['bits']} bits"),
        ("SecAgg+ k / t", f"{r['neighbours']} / {r['threshold']}"),
        ("rounds (status)", f"{r['rounds']} ({', '.join(r['statuses'])})"),
        ("round latency median / p95", f"{r['round_latency_median_s']:.2f} s / {r['round_latency_p95_s']:.2f} s"),
        ("server CPU per round (median)", f"{r['server_cpu_median_s']:.2f} s"),
        ("upload per client per round", f"{r['upload_bytes_per_client_per_round'] / 1024:,.1f} KiB "
                                        f"(masked vector {r['masked_vector_bytes'] / 1024:,.1f} KiB)"),
        ("download per client per round", f"{r['download_bytes_per_client_per_round'] / 1024:,.1f} KiB "
                                          f"(float32 model {r['float32_model_bytes'] / 1024:,.1f} KiB)"),
        ("same round in process (median)", f"{r['in_process_round_median_s']:.2f} s"),
        ("service / in-process latency", f"{r['latency_ratio_service_vs_in_process']:.2f}x"),
    ]
    width = max(len(a) for a, _ in rows)
    return "\n".join(f"{a:<{width}}  {b}" for a, b in rows)


if __name__ == "__main__":
    main()
