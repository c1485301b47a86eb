"""End to end: `fedvault serve` (uvicorn, a subprocess on 127.0.0.1) and 12 client processes.

One scenario, in order (digits, logistic regression, distributed Skellam noise, history records):

- the operator's enrolment authority (`fedvault authority init`, kept outside the server's state)
  signs the run's directory from the clients' `fedvault client fingerprint --json` and publishes
  it; every client pins the authority fingerprint and uses only that directory;

- rounds run with real clients over HTTP and the model improves;
- in round 1 four randomly chosen clients are SIGKILLed, one at each SecAgg+ stage (each kills
  itself on receiving that stage's request, so the stage is exact); the round still completes
  above the threshold; the one killed at unmask restarts at once, finds itself mid-round without
  its protocol secrets, sits the round out and rejoins the next; another restarts through the
  real `fedvault client run` CLI;
- in round 3 the server is SIGKILLed while the masked-input stage is open, then restarted on the
  same database and state directory: the round resumes, and nothing committed before the kill
  (rounds, ledger entries, audit entries) is lost or changed;
- against the finished server, a forged signature, a replayed request, another client's id and
  an oversized body each get a 4xx with a clear message and change nothing.
"""

from __future__ import annotations

import json
import os
import queue
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from cli.main import fedvault

from federation.keystore import load_keys
from federation.service.auth import HEADER_SIGNATURE, sign_request
from secagg.stages import MASKED_INPUT, SHARE_KEYS, STAGES, UNMASK
from storage.repositories import Repository

pytestmark = pytest.mark.slow

CLIENTS = 12
ROUNDS = 6
OPERATOR = "operator-token-end-to-end-0123456789"
RUN_FLAGS = ["--dataset", "digits", "--split", "iid", "--clients", str(CLIENTS), "--rounds", str(ROUNDS),
             "--model", "logreg", "--lr", "0.5", "--local-epochs", "2", "--seed", "5",
             "--noise", "distributed", "--mechanism", "skellam", "--epsilon", "50",
             "--neighbours", "11", "--threshold", "6"]
PACE_FLAGS = ["--min-clients", "8", "--train-timeout", "12", "--stage-timeout", "5", "--online-window", "3",
              "--log-level", "warning"]
FLEET = Path(__file__).with_name("client_fleet.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class Server:
    def __init__(self, work: Path, port: int) -> None:
        self.work, self.port = work, port
        self.url = f"http://127.0.0.1:{port}"
        self.process: subprocess.Popen | None = None
        self.starts = 0

    def start(self, *flags: str) -> None:
        self.starts += 1
        log = open(self.work / f"server-{self.starts}.log", "wb")  # noqa: SIM115 - lives with the process
        env = {**os.environ, "FEDVAULT_OPERATOR_TOKEN": OPERATOR}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "serve", "--db", str(self.work / "fedvault.db"), "--state-dir",
             str(self.work / "state"), "--port", str(self.port), *PACE_FLAGS, *flags],
            stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self.work)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.work / f"server-{self.starts}.log").read_text()
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise AssertionError("the server did not come up")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def operator(self, path: str):
        return httpx.get(f"{self.url}{path}", headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10).json()


class Fleet:
    """The forking client launcher (tests/service/client_fleet.py); its output is read by a thread."""

    def __init__(self, server: Server, work: Path, authority: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(FLEET), server.url, str(work), str(work / "tokens.json"), authority],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.lines: queue.Queue[str] = queue.Queue()
        self.exits: dict[int, int] = {}  # client id -> exit code of its latest process
        self.running = 0
        threading.Thread(target=self._read, daemon=True).start()
        assert self.lines.get(timeout=120) == "ready"

    def _read(self) -> None:
        for line in self.process.stdout:
            line = line.strip()
            if line.startswith("exit"):
                _, client_id, code = line.split()
                self.exits[int(client_id)] = int(code)
                self.running -= 1
            else:
                self.lines.put(line)

    def spawn(self, client_id: int, crash_at: tuple[int, str] | None = None) -> None:
        suffix = f" {crash_at[0]}:{crash_at[1]}" if crash_at else ""
        self.process.stdin.write(f"spawn {client_id}{suffix}\n")
        assert self.lines.get(timeout=30).startswith(f"pid {client_id} ")
        self.running += 1

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.stdin.close()
            self.process.wait(timeout=30)


def snapshot(db: Path, run_id: int):
    with Repository.open(str(db)) as repository:
        return (repository.list_rounds(run_id), repository.audit_entries(run_id),
                repository.ledger_entries(run_id), repository.list_deletion_requests(run_id),
                repository.list_clients(run_id))


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1, logs: Path | None = None):
    """Poll ``predicate``; the timeouts are generous because the suite shares two cores with
    others (a slow machine makes this test slower, not wrong). On timeout, show the logs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    tails = ""
    if logs is not None:
        tails = "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-8:])
                          for path in sorted(logs.glob("*.log")))
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


@pytest.fixture
def work(tmp_path):
    return tmp_path


@pytest.fixture
def server(work):
    server = Server(work, free_port())
    yield server
    server.kill()


def test_server_and_client_processes_survive_kills_and_restarts(work, server):
    server.start(*RUN_FLAGS, "--enrolment-tokens", str(work / "tokens.json"))
    run_id = httpx.get(f"{server.url}/v1/run").json()["run_id"]
    chooser = random.Random(7)
    victims = dict(zip(STAGES, chooser.sample(range(1, CLIENTS), len(STAGES))))  # stage -> client
    holdout = chooser.choice([c for c in range(1, CLIENTS) if c not in victims.values()])
    crash_plan = {client: (1, stage) for stage, client in victims.items()}
    crash_plan[holdout] = (3, MASKED_INPUT)  # keeps round 3's masked-input stage open for the server kill
    authority = sign_and_publish_directory(server, work, run_id)
    fleet = Fleet(server, work, authority)
    restarted = None
    try:
        for client_id in range(CLIENTS):
            fleet.spawn(client_id, crash_plan.get(client_id))

        # Round 1: the victims die at their stages. The unmask victim restarts at once (mid-round);
        # the share-keys victim restarts through the real CLI.
        unmask_victim, cli_victim = victims[UNMASK], victims[SHARE_KEYS]
        wait_for(lambda: fleet.exits.get(unmask_victim) == -signal.SIGKILL, 300, "the round 1 kills", logs=work)
        assert {fleet.exits.get(c) for c in victims.values()} == {-signal.SIGKILL}
        fleet.spawn(unmask_victim)
        tokens = json.loads((work / "tokens.json").read_text())["tokens"]
        restarted = subprocess.Popen(
            [sys.executable, "-m", "cli.main", "client", "run", "--server", server.url, "--client-id",
             str(cli_victim), "--key-dir", str(work / "keys"), "--enrolment-token", tokens[str(cli_victim)],
             "--authority-fingerprint", authority,
             "--poll-wait", "1", "--retry-max-delay", "1"],
            stdout=open(work / "restarted.log", "wb"), stderr=subprocess.STDOUT)  # noqa: SIM115

        # Round 3: kill the server while the masked-input stage is open, snapshot, restart.
        def masked_input_open():
            view = server.operator("/v1/operator/open-round")
            return view if view and view["round_index"] == 3 and view["stage"] == MASKED_INPUT else None

        wait_for(masked_input_open, 300, "round 3's masked-input stage", interval=0.05, logs=work)
        server.kill()
        before = snapshot(work / "fedvault.db", run_id)
        assert [r.round_index for r in before[0]] == [0, 1, 2]
        server.start()
        wait_for(lambda: httpx.get(f"{server.url}/v1/run").json()["status"] == "completed", 300,
                 "the run to complete", logs=work)
        wait_for(lambda: fleet.running == 0, 120, "every client process to end", logs=work)
        exits = dict(fleet.exits)
        assert restarted.wait(timeout=120) == 0, (work / "restarted.log").read_text()
    finally:
        fleet.close()
        if restarted is not None and restarted.poll() is None:
            restarted.kill()

    after = snapshot(work / "fedvault.db", run_id)
    rounds = after[0]
    # Nothing committed before the server was killed was lost or changed.
    assert rounds[:3] == before[0]
    assert after[1][:len(before[1])] == before[1]
    assert after[2][:len(before[2])] == before[2]
    # Every round completed; round 1 above the threshold despite a kill at every stage.
    assert [r.status for r in rounds] == ["completed"] * ROUNDS
    round_1 = rounds[1]
    assert set(round_1.survivors) == set(range(CLIENTS)) - {victims[s] for s in STAGES[:3]}
    assert len(round_1.survivors) >= round_1.parameters["threshold"]
    assert {stage: set(ids) for stage, ids in round_1.dropouts.items()} == \
        {stage: {victims[stage]} for stage in STAGES[:3]} | {UNMASK: {victims[UNMASK]}}
    resumed = [e for e in after[1] if e.event == "round.resumed"]
    assert [(e.round_index, e.payload["stage"]) for e in resumed] == [(3, MASKED_INPUT)]
    assert holdout not in rounds[3].survivors
    mid_round = (work / f"client-{unmask_victim}.log").read_text()
    assert "round 1: joined mid-round at unmask; sitting it out" in mid_round
    assert any(unmask_victim in r.survivors for r in rounds[2:])  # ... and rejoined a later round
    assert any(cli_victim in r.survivors for r in rounds[2:])
    # The model learned; the ledger charged every survivor before upload; the chains verify.
    accuracy = [e.payload["details"]["accuracy"] for e in after[1] if e.event == "round.committed"]
    assert accuracy[-1] > 0.6 and accuracy[-1] > accuracy[0] - 0.05
    assert {e.client_id for e in after[2] if e.round_index == 1} >= set(round_1.survivors)
    verify = server.operator("/v1/operator/verify")
    assert verify["audit_ok"] and verify["ledger_ok"]
    # Clients that were never killed finished cleanly.
    finished = (set(range(CLIENTS)) - set(crash_plan)) | {unmask_victim}
    assert {c: exits.get(c) for c in finished} == {c: 0 for c in finished}

    check_refusals(server, work, run_id)


def sign_and_publish_directory(server: Server, work: Path, run_id: int) -> str:
    """The operator's side: an authority key outside the server's state, each client's key as its
    `fedvault client fingerprint --json` shows it, the signed directory published. Returns the
    authority fingerprint the clients are given."""
    runner = CliRunner()

    def cli(*arguments):
        result = runner.invoke(fedvault, [*arguments])
        assert result.exit_code == 0, result.output
        return result.output

    authority = json.loads(cli("authority", "init", "--key-file", str(work / "operator" / "authority.key"),
                               "--json"))
    lines = [cli("client", "fingerprint", "--client-id", str(c), "--key-dir", str(work / "keys"), "--json").strip()
             for c in range(CLIENTS)]
    (work / "client-keys.jsonl").write_text("\n".join(lines) + "\n")
    cli("authority", "sign-directory", "--key-file", str(work / "operator" / "authority.key"), "--run-id",
        str(run_id), "--version", "1", "--keys", str(work / "client-keys.jsonl"), "--out",
        str(work / "directory.json"))
    published = json.loads(cli("authority", "publish", "--server", server.url, "--directory",
                               str(work / "directory.json"), "--operator-token", OPERATOR, "--json"))
    assert published["status"] == "published" and published["clients"] == CLIENTS
    assert published["authority_fingerprint"] == authority["fingerprint"]
    return authority["fingerprint"]


def check_refusals(server: Server, work: Path, run_id: int) -> None:
    """Forged, replayed, impersonating and oversized requests: a clear 4xx each, nothing changes."""
    keys = load_keys(work / "keys" / "client-0.key")
    before = snapshot(work / "fedvault.db", run_id)

    def signed(method, target, body=b"", *, client_id=0):
        return sign_request(keys.identity, run_id=run_id, client_id=client_id, method=method, target=target,
                            body=body)

    with httpx.Client(base_url=server.url, timeout=30) as http:
        headers = signed("GET", "/v1/clients/0/task")
        assert http.get("/v1/clients/0/task", headers=headers).status_code == 200
        replay = http.get("/v1/clients/0/task", headers=headers)
        assert replay.status_code == 401 and "replayed request refused" in replay.json()["detail"]

        forged = {**signed("GET", "/v1/clients/0/ledger"), HEADER_SIGNATURE: "ab" * 64}
        response = http.get("/v1/clients/0/ledger", headers=forged)
        assert response.status_code == 401 and "signature does not verify" in response.json()["detail"]

        response = http.get("/v1/clients/1/ledger", headers=signed("GET", "/v1/clients/1/ledger"))
        assert response.status_code == 403 and "may not act as or read client 1" in response.json()["detail"]
        response = http.get("/v1/clients/1/ledger", headers=signed("GET", "/v1/clients/1/ledger", client_id=1))
        assert response.status_code == 401  # claiming id 1 with client 0's key

        limit = httpx.get(f"{server.url}/v1/run").json()["max_message_bytes"]
        body = os.urandom(limit + 1)
        target = f"/v1/rounds/{ROUNDS}/masked-input"
        response = http.post(target, content=body, headers=signed("POST", target, body))
        assert response.status_code == 413 and f"limit of {limit} bytes" in response.json()["detail"]
    assert snapshot(work / "fedvault.db", run_id) == before
