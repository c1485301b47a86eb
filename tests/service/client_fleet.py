"""Client fleet for the end-to-end test: many real client processes, started fast.

Usage: python client_fleet.py SERVER_URL WORK_DIR TOKENS_JSON AUTHORITY_FINGERPRINT

Importing torch and the client stack, and torch's first training step, cost seconds of CPU per
process; on a shared 2-core machine twelve of them at once would eat the first round's deadline.
This launcher pays for them once (one thread, so no OpenMP worker threads exist at fork time),
loads the run's data, then fork()s one process per client. Each child is a separate OS process
running exactly what `fedvault client run` runs (``federation.http_client``'s
``ParticipantProcess``) against the server over HTTP, logging to WORK_DIR/client-<id>.log; it can
be SIGKILLed like any process.

Commands on stdin, one per line: ``spawn CLIENT_ID [ROUND:STAGE]`` starts a client (optionally
crashing itself with SIGKILL on receiving that stage's request). The launcher answers
``pid CLIENT_ID PID`` and, when a child ends, ``exit CLIENT_ID STATUS`` (STATUS: the exit code, or
-N for signal N). On end of input it SIGKILLs the children left and exits.
"""

from __future__ import annotations

import json
import os
import select
import signal
import sys
from pathlib import Path

import httpx
import numpy as np
import torch

from federation.config import RunConfig
from federation.evaluation import data_for
from federation.http_client import ClientOptions, ParticipantProcess, RetryPolicy
from federation.learning import LocalLearner

POLL_WAIT = 1.0


def child(server_url: str, work: Path, client_id: int, token: str, crash_at, authority: str) -> None:
    log = os.open(work / f"client-{client_id}.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)
    os.dup2(log, 2)
    options = ClientOptions(server_url=server_url, client_id=client_id, key_directory=work / "keys",
                            enrolment_token=token, poll_wait=POLL_WAIT, crash_at=crash_at, authority_fingerprint=authority,
                            retry=RetryPolicy(initial_delay=0.1, max_delay=1.0, max_elapsed=120.0))
    try:
        ParticipantProcess(options, echo=lambda line: print(line, flush=True)).run()
    except BaseException as error:  # noqa: BLE001 - the exit code carries it to the test
        print(f"client {client_id}: failed: {type(error).__name__}: {error}", flush=True)
        os._exit(1)
    os._exit(0)


def main() -> None:
    server_url, work, tokens_file, authority = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]
    tokens = json.loads(tokens_file.read_text())["tokens"]
    info = httpx.get(f"{server_url}/v1/run", timeout=30).json()
    config = RunConfig.from_dict(info["config"])
    torch.set_num_threads(1)
    data_for(config)  # the children inherit the loaded split ...
    learner = LocalLearner.for_client(config, 0)  # ... and a warmed-up torch
    learner.train(np.zeros(int(info["dimension"]), np.float32), bytes(32))
    children: dict[int, int] = {}

    def say(line: str) -> None:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()

    def spawn(client_id: int, crash_at) -> None:
        pid = os.fork()
        if pid == 0:
            child(server_url, work, client_id, tokens[str(client_id)], crash_at, authority)
        children[pid] = client_id
        say(f"pid {client_id} {pid}")

    say("ready")
    open_input = True
    while open_input or children:
        if open_input:
            readable, _, _ = select.select([sys.stdin], [], [], 0.05)
            if readable:
                line = sys.stdin.readline()
                if not line:
                    open_input = False
                    for pid in list(children):
                        os.kill(pid, signal.SIGKILL)
                    continue
                parts = line.split()
                if parts and parts[0] == "spawn":
                    crash_at = None
                    if len(parts) > 2:
                        round_text, stage = parts[2].split(":")
                        crash_at = (int(round_text), stage)
                    spawn(int(parts[1]), crash_at)
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid = 0
        if pid:
            client_id = children.pop(pid)
            code = -os.WTERMSIG(status) if os.WIFSIGNALED(status) else os.WEXITSTATUS(status)
            say(f"exit {client_id} {code}")


if __name__ == "__main__":
    main()
