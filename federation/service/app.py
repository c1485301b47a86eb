"""The FastAPI application of ``fedvault serve``.

Three kinds of caller:

- anyone: ``/v1/health``, ``/v1/run`` (the run's public parameters), the OpenAPI schema;
- clients: every request signed with the client's Ed25519 identity key
  (``federation.service.auth``); a client may only touch paths of its own id;
- the operator: ``Authorization: Bearer <operator token>`` for the read-only audit and history
  endpoints and for issuing enrolment tokens.

The four SecAgg+ stages each have an endpoint taking the raw wire message
(``application/octet-stream``); everything else is JSON (``federation.service.schemas``). Bodies
are capped per endpoint (413). Every refusal is a 4xx whose ``detail`` says what to fix.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
from collections.abc import Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from federation.authority import fingerprint
from federation.errors import FederationError
from federation.service import schemas
from federation.service.auth import (
    HEADER_CLIENT,
    HEADER_NONCE,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    ReplayGuard,
    RequestAuthenticator,
    check_enrolment_token,
    check_operator_token,
    enrolment_token,
)
from federation.service.errors import BadRequestError, ForbiddenError, NotFoundError, ServiceError
from federation.service.rounds import ClientReport, RoundManager
from federation.service.published_directory import PublishedDirectory, parse_signed_directory
from federation.service.state import ServerSecrets
from secagg.errors import SecAggError
from federation.service.routes import RECORD_PATH, RECORD_SEGMENT, STAGE_PATHS
from storage import errors as storage_errors

log = logging.getLogger("fedvault.service")

DEFAULT_JSON_LIMIT = 64 * 1024
DIRECTORY_BYTES_PER_CLIENT = 160  # one "id": "64 hex" entry of a signed directory, with room to spare
MAX_LONG_POLL_SECONDS = 30.0
DEFAULT_TICK_SECONDS = 0.05
_ROUND_INDEX = Path(ge=0, le=schemas.MAX_ROUND_INDEX)
_CLIENT_ID = Path(ge=0, le=schemas.MAX_CLIENT_ID)

__all__ = ["BodyLimitMiddleware", "ChangeFeed", "RoundDriver", "create_app"]


# --- plumbing --------------------------------------------------------------------------------


class BodyLimitMiddleware:
    """Refuses request bodies above ``limit_for(path)`` bytes with 413 before the app sees them.

    A declared Content-Length is checked before reading anything; a body without one (chunked)
    is counted as it arrives and refused as soon as it passes the limit.
    """

    def __init__(self, app, limit_for: Callable[[str], int]) -> None:
        self.app = app
        self.limit_for = limit_for

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.limit_for(scope["path"])
        declared = dict(scope["headers"]).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or len(declared) > 18:
                await _reject(send, 400, "Content-Length must be a decimal byte count")
                return
            if int(declared) > limit:
                await _reject(send, 413, f"request body of {int(declared)} bytes exceeds this endpoint's limit "
                                         f"of {limit} bytes")
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body = message.get("body", b"")
            size += len(body)
            if size > limit:
                await _reject(send, 413, f"request body exceeds this endpoint's limit of {limit} bytes")
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        whole = b"".join(chunks)
        delivered = False

        async def replay():
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": whole, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _reject(send, status: int, detail: str) -> None:
    response = JSONResponse({"detail": detail}, status_code=status, headers={"Connection": "close"})
    await send({"type": "http.response.start", "status": status, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body})


class ChangeFeed:
    """Wakes long-polling requests (on the event loop) when the manager's version changes (any thread)."""

    def __init__(self, current: Callable[[], int]) -> None:
        self._current = current
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._event = asyncio.Event()

    def notify(self) -> None:
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._fire)

    def _fire(self) -> None:
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, after_version: int, timeout: float) -> None:
        """Return once the version is not ``after_version``, or after ``timeout`` seconds."""
        if self._loop is None:
            return
        deadline = self._loop.time() + timeout
        while True:
            event = self._event
            if self._current() != after_version:
                return
            remaining = deadline - self._loop.time()
            if remaining <= 0:
                return
            try:
                await asyncio.wait_for(event.wait(), remaining)
            except TimeoutError:
                return


class RoundDriver:
    """A daemon thread calling ``manager.tick()`` every ``interval`` seconds, or at once when the
    open stage can close early."""

    def __init__(self, manager: RoundManager, interval: float = DEFAULT_TICK_SECONDS) -> None:
        self.manager = manager
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fedvault-round-driver", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.manager.wakeup.set()
        self._thread.join(timeout=30)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.manager.wakeup.wait(self.interval)
            if self._stop.is_set():
                return
            try:
                self.manager.tick()
            except Exception:  # noqa: BLE001 - keep driving; the failed step is retried next tick
                log.exception("round driver: tick failed; retrying")
                self._stop.wait(1.0)


def _target(request: Request) -> str:
    """The request target exactly as the client sent (and signed) it: raw path plus query."""
    path = request.scope.get("raw_path") or request.scope["path"].encode()
    query = request.scope.get("query_string", b"")
    target = path.decode("latin-1")
    return f"{target}?{query.decode('latin-1')}" if query else target


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode()


_BINARY_BODY = {"requestBody": {"required": True, "content": {
    "application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}}}
_BINARY_RESPONSE = {200: {"content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}},
                          "description": "(d,) float32 little-endian model parameters."}}
_ERRORS = {status: {"model": schemas.ErrorResponse} for status in (400, 401, 403, 404, 409, 413)}


# --- the application -------------------------------------------------------------------------


def create_app(manager: RoundManager, *, server_secrets: ServerSecrets,
               replay_guard: ReplayGuard | None = None, json_limit: int = DEFAULT_JSON_LIMIT,
               drive: bool = True, tick_interval: float = DEFAULT_TICK_SECONDS,
               max_threads: int = 256) -> FastAPI:
    """The service for ``manager``'s run.

    ``drive``: run the round driver thread while the app is up (tests may tick by hand).
    ``json_limit``: body cap of the JSON endpoints; the stage endpoints take up to
    ``manager.max_message_bytes()``.
    """
    run_id = manager.run_id
    authenticator = RequestAuthenticator(run_id, replay_guard or ReplayGuard())
    feed = ChangeFeed(lambda: manager.version)
    manager.add_listener(feed.notify)
    message_limit = manager.max_message_bytes()
    binary_suffixes = tuple("/" + segment for segment in (*STAGE_PATHS.values(), RECORD_SEGMENT))

    published = PublishedDirectory(manager.state, run_id)
    directory_limit = max(json_limit, DIRECTORY_BYTES_PER_CLIENT * manager.config.clients + 4096)

    def limit_for(path: str) -> int:
        if path == "/v1/operator/directory":
            return directory_limit
        return message_limit if path.startswith("/v1/rounds/") and path.endswith(binary_suffixes) else json_limit

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        feed.bind(asyncio.get_running_loop())
        anyio.to_thread.current_default_thread_limiter().total_tokens = max_threads
        driver = RoundDriver(manager, tick_interval) if drive else None
        if driver is not None:
            driver.start()
        try:
            yield
        finally:
            if driver is not None:
                driver.stop()

    app = FastAPI(
        title="fedvault",
        summary="Secure aggregation (SecAgg+ over lattice codes), a privacy ledger and unlearning, over HTTP.",
        version="1",
        lifespan=lifespan,
        responses=_ERRORS,
    )
    app.add_middleware(BodyLimitMiddleware, limit_for=limit_for)

    # --- errors ---------------------------------------------------------------------------

    @app.exception_handler(ServiceError)
    async def service_error(_request: Request, error: ServiceError):
        return JSONResponse({"detail": str(error)}, status_code=error.status_code)

    @app.exception_handler(storage_errors.StorageError)
    async def storage_error(_request: Request, error: storage_errors.StorageError):
        if isinstance(error, storage_errors.NotFoundError):
            status = 404
        elif isinstance(error, storage_errors.ConflictError):
            status = 409
        elif isinstance(error, storage_errors.StorageValueError):
            status = 400
        else:
            status = 503
        return JSONResponse({"detail": str(error)}, status_code=status)

    @app.exception_handler(SecAggError)
    async def secagg_error(_request: Request, error: SecAggError):
        return JSONResponse({"detail": str(error)}, status_code=400)

    @app.exception_handler(FederationError)
    async def federation_error(_request: Request, error: FederationError):
        return JSONResponse({"detail": str(error)}, status_code=400)

    # --- dependencies ---------------------------------------------------------------------

    async def signed_client(
        request: Request,
        client_header: str | None = Header(None, alias=HEADER_CLIENT, description="Your client id."),
        timestamp_header: str | None = Header(None, alias=HEADER_TIMESTAMP, description="Unix seconds."),
        nonce_header: str | None = Header(None, alias=HEADER_NONCE, description="16 random bytes, hex."),
        signature_header: str | None = Header(None, alias=HEADER_SIGNATURE,
                                              description="Ed25519 signature, hex (see federation.service.auth)."),
    ) -> int:
        body = await request.body()
        return authenticator.authenticate(method=request.method, target=_target(request), headers=request.headers,
                                          body=body, public_key_of=manager.public_key_of)

    bearer = HTTPBearer(auto_error=False, description="The operator token.")

    async def operator(request: Request, _credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        check_operator_token(server_secrets.operator_token, request.headers.get("authorization"))

    def own(authenticated: int, client_id: int) -> None:
        if authenticated != client_id:
            raise ForbiddenError(f"client {authenticated} may not act as or read client {client_id}")

    # --- public ---------------------------------------------------------------------------

    @app.get("/v1/health", response_model=schemas.HealthResponse, tags=["public"])
    async def health():
        return schemas.HealthResponse(status="ok", run_id=run_id)

    @app.get("/v1/run", response_model=schemas.RunResponse, tags=["public"])
    async def run_info():
        def view():
            info = manager.repository.get_run(run_id)
            return schemas.RunResponse(
                run_id=run_id, status=info.status, created_at=info.created_at, rounds=manager.config.rounds,
                next_round=manager.repository.next_round_index(run_id), config=info.config,
                dimension=manager.dimension, coordinates=manager.coordinates, bits=manager.bits,
                step=manager.step, lattice=manager.config.lattice, max_message_bytes=message_limit)
        return await run_in_threadpool(view)

    # --- enrolment ------------------------------------------------------------------------

    @app.post("/v1/enrol", response_model=schemas.EnrolResponse, tags=["client"], status_code=201,
              responses={200: {"model": schemas.EnrolResponse, "description": "Already enrolled with this key."}})
    async def enrol(body: schemas.EnrolRequest, request: Request,
                    client_header: str | None = Header(None, alias=HEADER_CLIENT),
                    timestamp_header: str | None = Header(None, alias=HEADER_TIMESTAMP),
                    nonce_header: str | None = Header(None, alias=HEADER_NONCE),
                    signature_header: str | None = Header(None, alias=HEADER_SIGNATURE)):
        check_enrolment_token(server_secrets.enrolment_key, run_id, body.client_id, body.enrolment_token)
        public_key = bytes.fromhex(body.identity_public_key)
        # Proof of possession: the enrolment request is signed with the key being enrolled.
        signer = authenticator.authenticate(
            method=request.method, target=_target(request), headers=request.headers, body=await request.body(),
            public_key_of=lambda claimed: public_key if claimed == body.client_id else None)
        own(signer, body.client_id)
        published.check_enrolment(body.client_id, public_key)  # once published, only the keys it lists
        created = await run_in_threadpool(manager.enrol, body.client_id, public_key,
                                          bytes.fromhex(body.history_commitment))
        result = schemas.EnrolResponse(run_id=run_id, client_id=body.client_id,
                                       status="enrolled" if created else "already-enrolled")
        return JSONResponse(result.model_dump(), status_code=201 if created else 200)

    # --- a client's round -----------------------------------------------------------------

    @app.get("/v1/clients/{client_id}/task", response_model=schemas.TaskResponse, tags=["client"])
    async def task(client_id: int = _CLIENT_ID, authenticated: int = Depends(signed_client),
                   after_version: int | None = Query(None, ge=0, description="Long poll: wait for a change "
                                                     "from this version."),
                   wait: float = Query(0.0, ge=0.0, le=MAX_LONG_POLL_SECONDS, description="Long poll, seconds.")):
        own(authenticated, client_id)
        if after_version is not None and wait > 0:
            await feed.wait(after_version, wait)
        current = await run_in_threadpool(manager.task, client_id)
        last = current.last_round
        return schemas.TaskResponse(
            run_status=current.run_status, version=current.version, round_index=current.round_index,
            stage=current.stage, selected=current.selected, answered=current.answered,
            request=_b64(current.request), plan=_b64(current.plan), record=current.record,
            stage_seconds_left=current.stage_seconds_left, record_stored=current.record_stored,
            last_round=None if last is None else schemas.LastRound(
                round_index=last.round_index, status=last.status, cohort=last.cohort, survivors=last.survivors,
                reason=last.reason))

    @app.get("/v1/rounds/{round_index}/model", tags=["client"], response_class=Response, responses=_BINARY_RESPONSE)
    async def model(round_index: int = _ROUND_INDEX, authenticated: int = Depends(signed_client)):
        parameters = await run_in_threadpool(manager.model_parameters, round_index)
        return Response(parameters, media_type="application/octet-stream")

    @app.get("/v1/directory", response_model=schemas.DirectoryResponse, tags=["client"])
    async def directory(authenticated: int = Depends(signed_client)):
        keys = manager.directory()
        signed = published.current
        return schemas.DirectoryResponse(identity_keys={str(c): k.hex() for c, k in sorted(keys.items())},
                                         signed_directory=None if signed is None else signed.to_json())

    @app.post("/v1/rounds/{round_index}/report", response_model=schemas.AcceptedResponse, tags=["client"])
    async def report(body: schemas.TrainReportRequest, round_index: int = _ROUND_INDEX,
                     authenticated: int = Depends(signed_client)):
        duplicate = await run_in_threadpool(
            manager.report, authenticated, round_index,
            ClientReport(body.num_samples, body.train_loss, tuple(body.sample_events)))
        return schemas.AcceptedResponse(round_index=round_index, stage="report", duplicate=duplicate)

    @app.post(RECORD_PATH, response_model=schemas.AcceptedResponse, tags=["client"], openapi_extra=_BINARY_BODY,
              summary="Send this client's sealed history record of the round (before advertise-keys)")
    async def history_record(request: Request, round_index: int = _ROUND_INDEX,
                             authenticated: int = Depends(signed_client)):
        sealed = await request.body()
        if not sealed:
            raise BadRequestError("empty body: send the sealed record (application/octet-stream)")
        duplicate = await run_in_threadpool(manager.submit_record, authenticated, round_index, sealed)
        return schemas.AcceptedResponse(round_index=round_index, stage="history-record", duplicate=duplicate)

    def stage_endpoint(stage: str):
        async def submit(request: Request, round_index: int = _ROUND_INDEX,
                         authenticated: int = Depends(signed_client)):
            message = await request.body()
            if not message:
                raise BadRequestError(f"empty body: send the {stage} message (application/octet-stream)")
            duplicate = await run_in_threadpool(manager.submit, authenticated, round_index, stage, message)
            return schemas.AcceptedResponse(round_index=round_index, stage=stage, duplicate=duplicate)

        submit.__name__ = f"submit_{stage}"
        return submit

    for stage, segment in STAGE_PATHS.items():
        app.post(f"/v1/rounds/{{round_index}}/{segment}", response_model=schemas.AcceptedResponse, tags=["client"],
                 openapi_extra=_BINARY_BODY, summary=f"Send this client's {stage} message (SecAgg+ wire bytes)",
                 )(stage_endpoint(stage))

    @app.get("/v1/rounds/{round_index}", response_model=schemas.RoundStatusResponse, tags=["client"])
    async def round_status(round_index: int = _ROUND_INDEX, authenticated: int = Depends(signed_client)):
        status = await run_in_threadpool(manager.round_status, round_index)
        return schemas.RoundStatusResponse(**status.__dict__)

    @app.get("/v1/clients/{client_id}/ledger", response_model=list[schemas.LedgerEntryResponse], tags=["client"])
    async def client_ledger(client_id: int = _CLIENT_ID, authenticated: int = Depends(signed_client)):
        own(authenticated, client_id)
        entries = await run_in_threadpool(manager.repository.ledger_entries, run_id, client_id)
        return [_ledger_view(e) for e in entries]

    @app.post("/v1/clients/{client_id}/deletion-request", response_model=schemas.DeletionRequestResponse,
              tags=["client"], openapi_extra=_BINARY_BODY,
              responses={202: {"model": schemas.DeletionRequestResponse,
                               "description": "Accepted; it runs between rounds: ask again for its state."}},
              summary="Unlearn this client (body: unlearning.requests.DeletionRequest.to_bytes())")
    async def request_deletion(request: Request, client_id: int = _CLIENT_ID,
                               authenticated: int = Depends(signed_client),
                               wait: float = Query(30.0, ge=0.0, le=MAX_LONG_POLL_SECONDS,
                                                   description="Seconds to wait for the deletion to finish.")):
        from unlearning.errors import UnlearningInputError
        from unlearning.requests import DeletionRequest

        own(authenticated, client_id)
        try:
            deletion = DeletionRequest.from_bytes(await request.body())
        except UnlearningInputError as error:
            raise BadRequestError(f"body is not a signed deletion request: {error}") from None
        if deletion.client_id != client_id:
            raise ForbiddenError(f"the deletion request names client {deletion.client_id}, not {client_id}")
        outcome = await run_in_threadpool(lambda: manager.request_deletion(deletion, timeout=wait))
        requests = await run_in_threadpool(manager.repository.list_deletion_requests, run_id, client_id)
        if outcome is None or not requests:
            latest = requests[-1] if requests else None
            body = {"request_id": latest.id if latest else 0, "client_id": client_id,
                    "state": latest.state if latest else "queued", "reason": None,
                    "created_at": latest.created_at.isoformat() if latest else None,
                    "updated_at": latest.updated_at.isoformat() if latest else None}
            return JSONResponse(body, status_code=202)
        return _deletion_view(next((r for r in requests if r.id == outcome.request_id), requests[-1]), outcome)

    @app.get("/v1/clients/{client_id}/deletion-request", response_model=schemas.DeletionRequestResponse,
             tags=["client"])
    async def deletion_status(client_id: int = _CLIENT_ID, authenticated: int = Depends(signed_client)):
        own(authenticated, client_id)
        requests = await run_in_threadpool(manager.repository.list_deletion_requests, run_id, client_id)
        if not requests:
            raise NotFoundError(f"client {client_id} has made no deletion request")
        return _deletion_view(requests[-1])

    # --- operator -------------------------------------------------------------------------

    @app.get("/v1/operator/rounds", response_model=list[schemas.RoundInfoResponse], tags=["operator"],
             dependencies=[Depends(operator)])
    async def operator_rounds():
        rounds = await run_in_threadpool(manager.repository.list_rounds, run_id)
        return [_round_view(r) for r in rounds]

    @app.get("/v1/operator/rounds/{round_index}", response_model=schemas.RoundInfoResponse, tags=["operator"],
             dependencies=[Depends(operator)])
    async def operator_round(round_index: int = _ROUND_INDEX):
        return _round_view(await run_in_threadpool(manager.repository.get_round, run_id, round_index))

    @app.get("/v1/operator/open-round", response_model=schemas.OpenRoundResponse | None, tags=["operator"],
             dependencies=[Depends(operator)])
    async def operator_open_round():
        view = await run_in_threadpool(manager.open_round_view)
        return None if view is None else schemas.OpenRoundResponse(**view)

    @app.get("/v1/operator/audit", response_model=list[schemas.AuditEntryResponse], tags=["operator"],
             dependencies=[Depends(operator)])
    async def operator_audit(event: str | None = Query(None, max_length=100, pattern=r"^[a-z][a-z0-9_.]*$"),
                             after_sequence: int = Query(-1, ge=-1, le=2**62),
                             limit: int = Query(1000, ge=1, le=10_000)):
        entries = await run_in_threadpool(manager.repository.audit_entries, run_id, event=event)
        chosen = [e for e in entries if e.sequence > after_sequence][:limit]
        return [schemas.AuditEntryResponse(sequence=e.sequence, event=e.event, round_index=e.round_index,
                                           client_id=e.client_id, payload=e.payload, created_at=e.created_at,
                                           prev_hash=e.prev_hash, entry_hash=e.entry_hash) for e in chosen]

    @app.get("/v1/operator/ledger", response_model=list[schemas.LedgerEntryResponse], tags=["operator"],
             dependencies=[Depends(operator)])
    async def operator_ledger(client_id: int | None = Query(None, ge=0, le=schemas.MAX_CLIENT_ID)):
        entries = await run_in_threadpool(manager.repository.ledger_entries, run_id, client_id)
        return [_ledger_view(e) for e in entries]

    @app.get("/v1/operator/clients", response_model=list[schemas.ClientInfoResponse], tags=["operator"],
             dependencies=[Depends(operator)])
    async def operator_clients():
        clients = await run_in_threadpool(manager.repository.list_clients, run_id)
        return [schemas.ClientInfoResponse(client_id=c.client_id, status=c.status,
                                           identity_public_key=c.identity_public_key.hex(),
                                           enrolled_at=c.enrolled_at, deleted_at=c.deleted_at,
                                           epsilon_budget=c.epsilon_budget, delta=c.delta) for c in clients]

    @app.get("/v1/operator/deletion-requests", response_model=list[schemas.DeletionRequestResponse],
             tags=["operator"], dependencies=[Depends(operator)])
    async def operator_deletions():
        requests = await run_in_threadpool(manager.repository.list_deletion_requests, run_id)
        return [_deletion_view(r) for r in requests]

    @app.get("/v1/operator/verify", response_model=schemas.VerifyResponse, tags=["operator"],
             dependencies=[Depends(operator)])
    async def operator_verify():
        def verify():
            audit = manager.repository.verify_audit_log(run_id)
            ledger = manager.repository.verify_ledger(run_id)
            return schemas.VerifyResponse(
                audit_ok=audit.ok, audit_entries_checked=audit.entries_checked,
                audit_first_bad=None if audit.first_bad is None else str(audit.first_bad),
                ledger_ok=ledger.ok, ledger_entries_checked=ledger.entries_checked,
                ledger_first_bad=None if ledger.first_bad is None else str(ledger.first_bad))
        return await run_in_threadpool(verify)

    @app.post("/v1/operator/directory", response_model=schemas.PublishDirectoryResponse, tags=["operator"],
              dependencies=[Depends(operator)],
              openapi_extra={"requestBody": {"required": True, "content": {"application/json": {"schema": {
                  "type": "object", "description": "A directory signed by `fedvault authority sign-directory`."}}}}})
    async def operator_directory(request: Request):
        signed = parse_signed_directory(await request.body())
        changed = await run_in_threadpool(published.publish, signed, manager.directory())
        return schemas.PublishDirectoryResponse(
            run_id=run_id, version=signed.directory.version, clients=len(signed.directory.identity_keys),
            authority_fingerprint=fingerprint(signed.authority_public_key),
            status="published" if changed else "unchanged")

    @app.post("/v1/operator/enrolment-tokens", response_model=schemas.TokenResponse, tags=["operator"],
              dependencies=[Depends(operator)])
    async def operator_tokens(body: schemas.TokenRequest):
        outside = [c for c in body.client_ids if c >= manager.config.clients]
        if outside:
            raise BadRequestError(f"run {run_id} has clients 0..{manager.config.clients - 1}; "
                                  f"no token for {outside[:5]}")
        return schemas.TokenResponse(run_id=run_id, tokens={
            str(c): enrolment_token(server_secrets.enrolment_key, run_id, c) for c in body.client_ids})

    return app


def _ledger_view(entry) -> schemas.LedgerEntryResponse:
    return schemas.LedgerEntryResponse(client_id=entry.client_id, sequence=entry.sequence,
                                       round_index=entry.round_index, stream=entry.stream,
                                       event_json=entry.event_json, epsilon_after=entry.epsilon_after,
                                       delta=entry.delta, created_at=entry.created_at, entry_hash=entry.entry_hash)


def _deletion_view(request, outcome=None) -> schemas.DeletionRequestResponse:
    extra = {}
    if outcome is not None:
        extra = {"model_version": outcome.model_version, "records_shredded": outcome.records_shredded,
                 "records_opened": outcome.records_opened}
    return schemas.DeletionRequestResponse(request_id=request.id, client_id=request.client_id, state=request.state,
                                           reason=request.reason, created_at=request.created_at,
                                           updated_at=request.updated_at, **extra)


def _round_view(info) -> schemas.RoundInfoResponse:
    return schemas.RoundInfoResponse(
        round_index=info.round_index, status=info.status, stage=info.stage, cohort=list(info.cohort),
        survivors=list(info.survivors), dropouts={k: list(v) for k, v in info.dropouts.items()},
        parameters=info.parameters, bytes_uploaded=info.bytes_uploaded, started_at=info.started_at,
        finished_at=info.finished_at, committed_at=info.committed_at)
