"""The networked client: ``fedvault client run`` and ``fedvault client request-deletion``.

A client process holds its Ed25519 identity key and master history secret in a 0600 key file
(``federation.keystore``), pins the enrolment authority whose fingerprint the operator gave it
out of band (``federation.authority``), enrols once with the operator-issued enrolment token (the
enrolment request is signed with the key it binds, and commits to this run's own history secret,
``federation.run_secrets``), then loops: long-poll its task, and when asked,

- ``advertise_keys``: check the plan and the round's SecAgg+ config against its own policy
  (``federation.client_policy``; a refusal uploads nothing), fetch the run's directory and use it
  only if the pinned authority signed it, fetch the round's model, train locally and encode
  through ``ClientRuntime.prepare`` (clip → lattice encode → noise → wrap), report, then answer
  with its signed key advertisement;
- later stages: answer the server's request with ``ClientRuntime.handle``.

Every request is signed afresh (new timestamp and nonce; a retry is a new request, so it is never
mistaken for a replay). Network failures, 429 and 502-504 answers are retried with capped
exponential backoff and full jitter; a reply is cached per (round, stage) so a retry after a lost
acknowledgement resends the same bytes (the server accepts an identical repeat). A client that
restarts mid-round has lost that round's SecAgg+ secrets: it sits the round out (the server
counts it as dropped) and joins the next one.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import os
import secrets
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx
import numpy as np

from federation.authority import normalise_fingerprint
from federation.client_policy import ClientPolicy
from federation.config import RunConfig
from federation.errors import FederationError
from federation.keystore import ClientKeys, load_keys, load_or_create_keys, run_state_tag
from federation.service.auth import sign_request
from federation.service.errors import ServiceRequestError
from federation.service.routes import record_path, stage_path
from secagg.errors import SecAggError
from secagg.keys import IdentityKey
from secagg.stages import ADVERTISE_KEYS

RETRYABLE_STATUS = frozenset({429, 502, 503, 504})

__all__ = ["ClientOptions", "ParticipantProcess", "RetryPolicy", "ServiceClient", "key_path",
           "request_deletion"]


@dataclass(frozen=True)
class RetryPolicy:
    """Capped exponential backoff with full jitter (seconds).

    Attempt k (0-based) waits uniform(0, min(max_delay, initial_delay·multiplier^k)); a call
    gives up once ``max_elapsed`` seconds have passed since its first attempt.
    """

    initial_delay: float = 0.2
    multiplier: float = 2.0
    max_delay: float = 5.0
    max_elapsed: float = 300.0

    def __post_init__(self) -> None:
        if not (0 < self.initial_delay <= self.max_delay) or self.multiplier < 1 or self.max_elapsed <= 0:
            raise FederationError("retry policy needs 0 < initial_delay <= max_delay, multiplier >= 1, "
                                  "max_elapsed > 0")

    def delays(self) -> Iterator[float]:
        """The jittered waits between attempts (unbounded; the caller stops at max_elapsed)."""
        jitter = secrets.SystemRandom()  # not secret, but no process-wide seeded generator either
        ceiling = self.initial_delay
        while True:
            yield jitter.uniform(0, ceiling)
            ceiling = min(self.max_delay, ceiling * self.multiplier)


@dataclass(frozen=True)
class Task:
    """The client's view of ``GET /v1/clients/{id}/task`` (bytes decoded)."""

    run_status: str
    version: int
    round_index: int | None
    stage: str | None
    selected: bool
    answered: bool
    request: bytes | None
    plan: bytes | None
    record: bool
    last_round: dict | None
    record_stored: bool

    @classmethod
    def from_json(cls, values: dict[str, Any]) -> Task:
        def decode(text):
            return None if text is None else base64.b64decode(text)

        return cls(values["run_status"], values["version"], values.get("round_index"), values.get("stage"),
                   values.get("selected", False), values.get("answered", False), decode(values.get("request")),
                   decode(values.get("plan")), values.get("record", False), values.get("last_round"),
                   values.get("record_stored", False))


class ServiceClient:
    """Signed HTTP calls to a fedvault server, with retries.

    Args:
        server_url: ``http(s)://host:port``.
        verify: TLS verification: True (system CAs), a CA bundle path, or False (never in production).
        timeout: seconds per attempt (long polls add their wait).
        retry: backoff policy for network errors and 429/502/503/504.
        http: an ``httpx.Client`` to use instead (tests pass the ASGI test client).
    """

    def __init__(self, server_url: str, *, verify: bool | str = True, timeout: float = 60.0,
                 retry: RetryPolicy | None = None, http: httpx.Client | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.server_url = server_url.rstrip("/")
        self.retry = retry or RetryPolicy()
        self.timeout = timeout
        self._http = http or httpx.Client(base_url=self.server_url, verify=verify, timeout=timeout)
        self._sleep = sleep
        self.client_id: int | None = None
        self.run_id: int | None = None
        self._identity: IdentityKey | None = None
        self.bytes_sent = 0
        self.bytes_received = 0

    def close(self) -> None:
        self._http.close()

    def set_identity(self, client_id: int, identity: IdentityKey, run_id: int) -> None:
        self.client_id, self._identity, self.run_id = client_id, identity, run_id

    # --- transport ---------------------------------------------------------------------------

    def request(self, method: str, path: str, *, json_body: Any = None, content: bytes | None = None,
                params: dict[str, Any] | None = None, signed: bool = True, timeout: float | None = None,
                client_id: int | None = None, identity: IdentityKey | None = None) -> httpx.Response:
        """One call, retried on network errors and 429/502/503/504; 4xx raises ServiceRequestError."""
        body = json.dumps(json_body).encode() if json_body is not None else (content or b"")
        target = f"{path}?{urlencode(params)}" if params else path
        headers = {"Content-Type": "application/json" if json_body is not None else "application/octet-stream"}
        started = time.monotonic()
        delays = self.retry.delays()
        last_problem = "no attempt made"
        while True:
            if signed:
                signer_id = self.client_id if client_id is None else client_id
                signer = self._identity if identity is None else identity
                if signer is None or signer_id is None or self.run_id is None:
                    raise ServiceRequestError("no identity set: enrol or load the key file first")
                headers.update(sign_request(signer, run_id=self.run_id, client_id=signer_id, method=method,
                                            target=target, body=body))
            try:
                response = self._http.request(method, target, content=body, headers=headers,
                                              timeout=timeout or self.timeout)
            except httpx.TransportError as error:
                if "CERTIFICATE_VERIFY_FAILED" in str(error):  # retrying cannot fix trust
                    raise ServiceRequestError(f"{method} {path}: the server's TLS certificate is not trusted "
                                              f"({error}); pass the CA that signed it with --cafile") from None
                last_problem = f"{type(error).__name__}: {error}"
            else:
                self.bytes_sent += len(body)
                self.bytes_received += len(response.content)
                if response.status_code < 400:
                    return response
                detail = _detail(response)
                if response.status_code not in RETRYABLE_STATUS:
                    raise ServiceRequestError(f"{method} {path}: {response.status_code} {detail}",
                                              response.status_code)
                last_problem = f"{response.status_code} {detail}"
            if time.monotonic() - started > self.retry.max_elapsed:
                raise ServiceRequestError(f"{method} {path}: gave up after {self.retry.max_elapsed:.0f} s "
                                          f"({last_problem})")
            self._sleep(next(delays))

    # --- endpoints ---------------------------------------------------------------------------

    def run_info(self) -> dict[str, Any]:
        return self.request("GET", "/v1/run", signed=False).json()

    def enrol(self, enrolment_token: str, keys: ClientKeys, history_commitment: bytes) -> str:
        body = {"client_id": keys.client_id, "enrolment_token": enrolment_token,
                "identity_public_key": keys.identity.public_bytes.hex(),
                "history_commitment": history_commitment.hex()}
        response = self.request("POST", "/v1/enrol", json_body=body, client_id=keys.client_id,
                                identity=keys.identity)
        return response.json()["status"]

    def task(self, *, after_version: int | None = None, wait: float = 0.0) -> Task:
        params = {}
        if after_version is not None and wait > 0:
            params = {"after_version": after_version, "wait": wait}
        response = self.request("GET", f"/v1/clients/{self.client_id}/task", params=params or None,
                                timeout=self.timeout + wait)
        return Task.from_json(response.json())

    def directory(self) -> dict[int, bytes]:
        """The enrolled identity keys as the server lists them (unsigned: the server's word only)."""
        keys = self.request("GET", "/v1/directory").json()["identity_keys"]
        return {int(c): bytes.fromhex(k) for c, k in keys.items()}

    def signed_directory(self):
        """The run's directory as the enrolment authority signed it (``federation.authority``);
        FederationError when the server has none. The caller verifies it against its pin."""
        from federation.authority import SignedDirectory

        signed = self.request("GET", "/v1/directory").json().get("signed_directory")
        if signed is None:
            raise FederationError("the server has no directory signed by the enrolment authority yet "
                                  "(the operator publishes it with `fedvault authority publish`)")
        return SignedDirectory.from_json(signed)

    def model(self, round_index: int) -> np.ndarray:
        """(d,) float32 parameters of the open round (a writable copy)."""
        raw = self.request("GET", f"/v1/rounds/{round_index}/model").content
        return np.frombuffer(raw, dtype="<f4").astype(np.float32)

    def report(self, round_index: int, num_samples: int, train_loss: float | None,
               sample_events: list[dict] | None = None) -> bool:
        loss = None if train_loss is None or not np.isfinite(train_loss) else float(train_loss)
        body = {"num_samples": int(num_samples), "train_loss": loss, "sample_events": sample_events or []}
        return self.request("POST", f"/v1/rounds/{round_index}/report", json_body=body).json()["duplicate"]

    def submit(self, round_index: int, stage: str, message: bytes) -> bool:
        return self.request("POST", stage_path(round_index, stage), content=message).json()["duplicate"]

    def submit_record(self, round_index: int, sealed: bytes) -> bool:
        return self.request("POST", record_path(round_index), content=sealed).json()["duplicate"]

    def round_status(self, round_index: int) -> dict[str, Any]:
        return self.request("GET", f"/v1/rounds/{round_index}").json()

    def ledger(self) -> list[dict[str, Any]]:
        return self.request("GET", f"/v1/clients/{self.client_id}/ledger").json()

    def request_deletion(self, signed_request: bytes, *, wait: float = 30.0) -> dict[str, Any]:
        """Send a signed ``unlearning.requests.DeletionRequest`` (bytes); the server unlearns this
        client between rounds and answers with the request's state (202 while it waits)."""
        response = self.request("POST", f"/v1/clients/{self.client_id}/deletion-request", content=signed_request,
                                params={"wait": wait}, timeout=self.timeout + wait)
        return response.json()

    def deletion_status(self) -> dict[str, Any]:
        return self.request("GET", f"/v1/clients/{self.client_id}/deletion-request").json()


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail")
    except (ValueError, AttributeError):
        detail = None
    if detail is None:
        return response.text[:300]
    return detail if isinstance(detail, str) else json.dumps(detail)[:300]


# --- the participant process -----------------------------------------------------------------


def check_transport(server_url: str, *, insecure: bool = False) -> None:
    """FederationError unless ``server_url`` is https://, or http:// to a loopback host
    (localhost, 127.0.0.0/8, ::1), or ``insecure`` is set.

    Plain HTTP to another host would hand a network observer every request body, including a
    deletion request's history secret; only an explicit ``--insecure`` allows it.
    """
    parsed = urlsplit(server_url)
    scheme = parsed.scheme.lower()
    if scheme == "https":
        return
    if scheme != "http":
        raise FederationError(f"server URL {server_url!r} must start with https:// (or http:// to this machine)")
    host = (parsed.hostname or "").lower()
    if insecure or _is_loopback(host):
        return
    raise FederationError(f"refusing plain HTTP to {host or server_url!r}: requests (a deletion request carries "
                          "the history secret) would cross the network unencrypted; use https:// or pass --insecure")


def _is_loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def key_path(key_directory: Path, client_id: int) -> Path:
    """Where client ``client_id``'s key file lives (the path ``ClientRuntime`` loads)."""
    return Path(key_directory) / f"client-{client_id}.key"


@dataclass(frozen=True)
class ClientOptions:
    """Everything ``fedvault client run`` takes.

    ``data_file``: an ``.npz`` with ``features`` (N, F) and ``labels`` (N,) to train on instead
    of the run's bundled shard for this id. ``crash_at``: (round, stage) at which the process
    kills itself with SIGKILL on receiving that request (fault injection for tests).
    ``insecure``: allow plain http:// to a non-loopback host (``check_transport``).
    ``authority_fingerprint``: the enrolment authority's fingerprint, given out of band; needed
    on the first start in a run unless ``trust_server_directory`` (the server's unsigned word on
    every identity key: never against a server you do not operate). ``policy``: this client's own
    floor under the server's plans (``federation.client_policy``; safe defaults).
    """

    server_url: str
    client_id: int
    key_directory: Path
    enrolment_token: str | None = None
    data_file: Path | None = None
    verify: bool | str = True
    poll_wait: float = 20.0
    exit_when_done: bool = True
    crash_at: tuple[int, str] | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    insecure: bool = False
    authority_fingerprint: str | None = None
    trust_server_directory: bool = False
    policy: ClientPolicy = field(default_factory=ClientPolicy)

    def __post_init__(self) -> None:
        check_transport(self.server_url, insecure=self.insecure)
        if self.authority_fingerprint is not None:
            normalise_fingerprint(self.authority_fingerprint)  # AuthorityError names a malformed one


@dataclass
class ParticipationSummary:
    client_id: int
    rounds_answered: list[int] = field(default_factory=list)
    rounds_skipped: list[int] = field(default_factory=list)
    bytes_sent: int = 0
    bytes_received: int = 0


class ParticipantProcess:
    """One client's life: enrol, then take part in rounds until the run completes."""

    def __init__(self, options: ClientOptions, *, echo: Callable[[str], None] = print,
                 http: httpx.Client | None = None) -> None:
        self.options = options
        self.echo = echo
        self.service = ServiceClient(options.server_url, verify=options.verify, retry=options.retry, http=http)
        self.summary = ParticipationSummary(options.client_id)
        self._prepared_round: int | None = None
        self._skipped_round: int | None = None
        self._replies: dict[tuple[int, str], bytes] = {}
        self._started = False
        self._config: RunConfig | None = None
        self._run_id: int | None = None
        self._run_tag: str | None = None
        self._runtime = None

    def _say(self, text: str) -> None:
        if self.echo is not None:
            self.echo(f"client {self.options.client_id}: {text}")

    def start(self) -> None:
        """Fetch the run, load or create the key file, enrol, build the local runtime (before the
        first poll: a client counts as online, so it may be sampled, only once it can train)."""
        options = self.options
        info = self.service.run_info()
        self._config = RunConfig.from_dict(info["config"])
        self._run_id = run_id = int(info["run_id"])
        # Names this run's client-side state files (record chain, own ledger) uniquely, even if
        # another server or database reuses the run id.
        self._run_tag = run_state_tag(run_id, datetime.fromisoformat(info["created_at"]))
        if not 0 <= options.client_id < self._config.clients:
            raise FederationError(f"run {run_id} has clients 0..{self._config.clients - 1}; got {options.client_id}")
        keys = load_or_create_keys(key_path(options.key_directory, options.client_id), options.client_id)
        self.service.set_identity(options.client_id, keys.identity, run_id)
        runtime = self.runtime
        if not options.trust_server_directory and not runtime.authority_pinned:
            raise FederationError("no enrolment authority pinned for this run: pass the authority fingerprint the "
                                  "operator gave you (--authority-fingerprint), or --trust-server-directory to take "
                                  "every identity key on the server's word")
        if options.enrolment_token:
            _, commitment = runtime.enrolment()
            if commitment is None:
                raise FederationError(f"client {options.client_id}'s history secret for run {run_id} was destroyed "
                                      "after its deletion; it cannot enrol again")
            status = self.service.enrol(options.enrolment_token, keys, commitment)
            self._say(f"{status} in run {run_id}")
        self._started = True

    @property
    def runtime(self):
        """This client's ``ClientRuntime`` (its data, model, trainer, record chain), built once."""
        if self._runtime is None:
            from federation.client_runtime import ClientRuntime

            options = self.options
            runtime = ClientRuntime(options.client_id, self._config, self._run_id, Path(options.key_directory),
                                    run_tag=self._run_tag, authority_fingerprint=options.authority_fingerprint,
                                    policy=options.policy)
            if options.data_file is not None:
                runtime.learner = _learner_from_file(self._config, options.client_id, Path(options.data_file))
            self._runtime = runtime
        return self._runtime

    def run(self) -> ParticipationSummary:
        """Take part in rounds until the run completes (or forever, without ``exit_when_done``)."""
        if not self._started:
            self.start()
        version = None
        last_told = None
        while True:
            task = self.service.task(after_version=version, wait=self.options.poll_wait)
            version = task.version
            if task.last_round and task.last_round != last_told:
                last_told = task.last_round
                self._tell_outcome(task.last_round)
                if task.record_stored:
                    # The server committed this client's record: code the next one against it.
                    self.runtime.confirm_record(task.last_round["round_index"])
            if task.run_status == "completed" and task.round_index is None:
                self._say("the run is complete")
                if self.options.exit_when_done:
                    break
            if task.request is not None:
                self._answer(task)
        self.summary.bytes_sent = self.service.bytes_sent
        self.summary.bytes_received = self.service.bytes_received
        return self.summary

    def _tell_outcome(self, outcome: dict) -> None:
        if outcome["status"] == "completed":
            self._say(f"round {outcome['round_index']} completed with {outcome['survivors']}/{outcome['cohort']} "
                      "clients")
        else:
            self._say(f"round {outcome['round_index']} aborted: {outcome.get('reason')}")

    def _answer(self, task: Task) -> None:
        round_index, stage = task.round_index, task.stage
        if self.options.crash_at == (round_index, stage):
            os.kill(os.getpid(), signal.SIGKILL)  # fault injection: die exactly here, like a power cut
        if self._skipped_round == round_index:
            return
        try:
            if stage == ADVERTISE_KEYS and self._prepared_round != round_index:
                self._prepare(task)
            elif self._prepared_round != round_index:
                # Restarted mid-round: this round's SecAgg+ secrets died with the old process.
                self._skip(round_index, f"joined mid-round at {stage}; sitting it out, rejoining the next round")
                return
            key = (round_index, stage)
            reply = self._replies.get(key)
            if reply is None:
                reply = self.runtime.handle(task.request)
                self._replies = {k: v for k, v in self._replies.items() if k[0] == round_index}
                self._replies[key] = reply
            self.service.submit(round_index, stage, reply)
        except ServiceRequestError as error:
            if error.status_code == 409:  # the stage closed under us, or the round ended: wait for the next
                self._say(f"round {round_index} {stage}: {error}")
                return
            raise
        except (SecAggError, FederationError) as error:
            self._skip(round_index, f"{stage} refused locally: {error}")
            return
        if stage == ADVERTISE_KEYS:
            self.summary.rounds_answered.append(round_index)

    def _prepare(self, task: Task) -> None:
        round_index = task.round_index
        self.runtime.check_request(task.request, task.plan)  # this client's policy, before any upload
        if self.options.trust_server_directory:
            self.runtime.trust_unsigned_directory(self.service.directory())
        else:
            self.runtime.set_directory(self.service.signed_directory())
        parameters = self.service.model(round_index)
        report = self.runtime.prepare(task.plan, parameters, record=task.record)
        if report.history_record is not None:
            self.service.submit_record(round_index, report.history_record)
        events = []
        if report.sample_events:
            from privacy.events import event_to_json

            events = [event_to_json(e) for e in report.sample_events]
        self.service.report(round_index, report.num_samples, report.train_loss, events)
        self._prepared_round = round_index
        self._say(f"round {round_index}: trained on {report.num_samples} examples (loss {report.train_loss:.4f})")

    def _skip(self, round_index: int, why: str) -> None:
        self._skipped_round = round_index
        self.summary.rounds_skipped.append(round_index)
        self._say(f"round {round_index}: {why}")


def _learner_from_file(config: RunConfig, client_id: int, path: Path):
    """A LocalLearner over a user-given ``.npz`` (``features`` (N, F), ``labels`` (N,))."""
    from federation.datasets import ClientData
    from federation.evaluation import data_for, model_for
    from federation.learning import LocalLearner, trainer_for

    try:
        with np.load(path, allow_pickle=False) as archive:
            features, labels = archive["features"], archive["labels"]
    except (OSError, KeyError, ValueError) as error:
        raise FederationError(f"data file {path}: {error} (expected an .npz with 'features' and 'labels')") from None
    reference = data_for(config)
    width = int(np.prod(reference.input_shape))
    if features.ndim != 2 or features.shape[1] != width:
        raise FederationError(f"data file {path}: features must be (N, {width}) for {config.dataset}, "
                              f"got {features.shape}")
    if labels.size and (labels.min() < 0 or labels.max() >= reference.num_classes):
        raise FederationError(f"data file {path}: labels must be in 0..{reference.num_classes - 1}")
    data = ClientData(features, labels, client_id=client_id)
    return LocalLearner(client_id, trainer_for(config, model_for(config, reference)), data)


TERMINAL_DELETION_STATES = ("shredded", "failed")


def request_deletion(options: ClientOptions, *, timeout: float = 600.0, http: httpx.Client | None = None,
                     sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Ask the server to unlearn this client, releasing this run's history secret (and no other
    run's, ``federation.run_secrets``), and wait (up to ``timeout`` seconds) until the request is
    shredded or failed. Once the server says shredded, the client destroys that run's secret
    (the result then has ``history_secret_destroyed``: True).

    The request is signed with the enrolled identity key over (run, client, time, SHA-256 of the
    secret) (``unlearning.requests``) and travels inside a signed HTTP request. The server runs it
    between rounds; while it waits, the same request is sent again (it is idempotent and resumes
    after a server restart, which forgets the in-memory secret). Returns the final state.
    """
    from federation.run_secrets import destroy_run_history_secret, run_history_secret
    from unlearning.requests import sign_deletion_request

    key_file = key_path(options.key_directory, options.client_id)
    keys = load_keys(key_file)
    if keys.client_id != options.client_id:
        raise FederationError(f"key file belongs to client {keys.client_id}, not {options.client_id}")
    service = ServiceClient(options.server_url, verify=options.verify, retry=options.retry, http=http, sleep=sleep)
    started = time.monotonic()
    try:
        info = service.run_info()
        run_id = int(info["run_id"])
        run_tag = run_state_tag(run_id, datetime.fromisoformat(info["created_at"]))
        secret = run_history_secret(key_file, keys, run_id, run_tag, create=False)
        service.set_identity(options.client_id, keys.identity, run_id)
        while True:
            signed = sign_deletion_request(keys.identity, secret, run_id, options.client_id)
            state = service.request_deletion(signed.to_bytes())
            if state["state"] == "shredded":
                # The server confirmed: this run's secret has served its one purpose.
                when = datetime.now(UTC).isoformat(timespec="seconds")
                state["history_secret_destroyed"] = destroy_run_history_secret(key_file, run_tag, when=when)
            if state["state"] in TERMINAL_DELETION_STATES or time.monotonic() - started > timeout:
                return state
    finally:
        if http is None:
            service.close()
