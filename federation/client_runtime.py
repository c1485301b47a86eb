"""One client of a run: local data, local training, clip → encode → noise → wrap, and SecAgg+.

A ``ClientRuntime`` is what a real client machine runs; in a simulation it lives inside a worker
process (``federation.workers``) and only serialized protocol messages and model vectors reach it.
Its norm, its update and its noise never leave it; what leaves is the masked vector (and, with
unlearning, a sealed history record only it can open).

The history record holds exactly the client's term in the secure sum, decoded to update units
(``unlearning.run_records``). Opening it, which happens only on the client's own deletion
request (it releases this run's history secret, ``federation.run_secrets``), reveals in
distributed or no-noise mode its clipped update to lattice precision (not its distributed noise
share, which protects the others' sum), and in local mode only its ε-LDP release.

What the client trusts. Its neighbours' identity keys come from the server (over HTTP, from
``GET /v1/directory``; in the simulation, from the coordinator), so the client uses them only
inside a directory signed by the enrolment authority it pinned (``federation.authority``):
unsigned, unverifiable, rolled-back or key-changing directories are refused. The round's
parameters also come from the server; the client's own :class:`federation.client_policy.ClientPolicy`
refuses a plan (in ``prepare``, before training) or a SecAgg+ round config (before the first
answer) that is weaker than it accepts.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from federation.authority import DirectoryPins, SignedDirectory, pins_path
from federation.client_ledger import ClientLedger
from federation.client_policy import ClientPolicy, PolicyRefusedError
from federation.config import RunConfig
from federation.errors import FederationError
from federation.keystore import load_or_create_keys
from federation.round_plan import RoundPlan
from federation.run_secrets import RunSecretDestroyedError, run_history_secret
from privacy.clipping import clip_l2
from privacy.errors import BudgetExceededError
from privacy.mechanisms import LocalNoise, release_distributed_share, release_local
from secagg.client import SecAggClient
from secagg.errors import MalformedMessageError
from secagg.modular import wrap
from secagg.stages import MASKED_INPUT
from secagg.wire import AdvertiseKeysRequest, decode_message
from unlearning.chain_file import ChainFile, ChainState, chain_path
from unlearning.records import RecordChain, build_record
from unlearning.run_records import run_record_config
from unlearning.secrets import history_commitment

if TYPE_CHECKING:
    from federation.workload import Workload


class ClientRefusedError(FederationError):
    """The client declined the round (plan it does not accept, or its own budget check failed)."""


@dataclass(frozen=True)
class TrainReport:
    """What a client tells the server after local training: public, no norms, no values."""

    client_id: int
    num_samples: int
    train_loss: float
    sample_events: tuple = ()  # DP-SGD's privacy events (public descriptions), charged by the server
    history_record: bytes | None = None  # sealed record of this round's contribution (opaque, fixed size)


@dataclass(frozen=True)
class ClientFactory:
    """Builds a ClientRuntime by id inside a worker process (picklable)."""

    config: RunConfig
    run_id: int
    key_directory: str
    run_tag: str | None = None
    workload: Workload | None = None  # a user's model and data (federation.workload)
    authority_public_key: bytes | None = None  # the enrolment authority every client pins
    policy: ClientPolicy | None = None  # every client's own policy (None: ClientPolicy.accepting(config))
    # (client_id, learner) -> learner: replaces some clients' local learning, e.g. the crafted
    # updates of an audit's canary clients (federation.canaries); everything after it is unchanged
    learner_override: Callable | None = None

    def __call__(self, client_id: int) -> ClientRuntime:
        runtime = ClientRuntime(client_id, self.config, self.run_id, Path(self.key_directory), run_tag=self.run_tag,
                                workload=self.workload, authority_public_key=self.authority_public_key,
                                policy=self.policy)
        if self.learner_override is not None:
            runtime.learner = self.learner_override(client_id, runtime.learner)
        return runtime


class ClientRuntime:
    """One client of one run (module doc).

    ``authority_public_key`` / ``authority_fingerprint``: the enrolment authority this client pins
    for the run (the simulation knows the key; a networked client is given the fingerprint out of
    band and pins the key of the first directory that matches it). ``policy``: this client's own
    floor under the server's plan; None means ``ClientPolicy.accepting(config)`` (a client that
    accepts exactly the run's config, which a networked client must not take from the server).
    """

    def __init__(self, client_id: int, config: RunConfig, run_id: int, key_directory: Path, *,
                 run_tag: str | None = None, workload: Workload | None = None,
                 authority_public_key: bytes | None = None, authority_fingerprint: str | None = None,
                 policy: ClientPolicy | None = None) -> None:
        from federation.backdoor import learner_for  # torch is imported only inside workers

        self.client_id = client_id
        self.config = config
        self.run_id = run_id
        self.policy = policy if policy is not None else ClientPolicy.accepting(config)
        key_file = key_directory / f"client-{client_id}.key"
        self.keys = load_or_create_keys(key_file, client_id)
        run_tag = run_tag or str(run_id)  # federation.keystore.run_state_tag: unique across databases
        self._key_file, self._run_tag = key_file, run_tag
        self._history_secret: bytes | None = None
        self._pins = DirectoryPins(pins_path(key_file, run_tag), client_id, self.keys.identity.public_bytes, run_id)
        self._pins.pin_authority(public_key=authority_public_key, fingerprint_text=authority_fingerprint)
        if config.trainer == "locodl":  # state across rounds, kept next to the keys
            from federation.evaluation import data_for
            from federation.locodl_run import LoCoDLLearner, locodl_setup, state_file

            self.learner = LoCoDLLearner(client_id, locodl_setup(config), data_for(config).clients[client_id],
                                         state_file(key_directory, client_id, run_tag))
        elif workload is not None:  # the user's own model and data
            self.learner = workload.learner(config, client_id)
        else:  # the run's named data and model (poisoned if the run plants a backdoor)
            self.learner = learner_for(config, client_id)
        self._chain_path = chain_path(key_file, run_tag)
        self._chain_file: ChainFile | None = None  # opened with the first record
        # The run's budget comes from the server's config; the client's policy may only lower it.
        self._own_ledger = ClientLedger(key_file.with_name(f"client-{client_id}.run-{run_tag}.ledger.json"),
                                        client_id, self.policy.run_budget(config.client_budget), config.delta,
                                        record_budget_epsilon=config.record_budget)
        self._round_releases: list[tuple[str, object]] = []
        self._round_index: int | None = None
        self._chain: ChainState | None = None
        self._identity_directory: dict[int, bytes] = {}
        self._secagg: SecAggClient | None = None
        self._plan_bytes: bytes | None = None
        self._pending_input: np.ndarray | None = None
        self._fedp3_round = None  # federation.fedp3_client.FedP3ClientRound of the current FedP3 round

    # --- enrolment ---------------------------------------------------------------------------

    @property
    def authority_pinned(self) -> bool:
        """Whether this client has an enrolment authority pinned for the run (given now or before)."""
        return self._pins.pinned

    @property
    def history_secret(self) -> bytes:
        """This run's history secret H_i(run) (``federation.run_secrets``), derived on first use;
        RunSecretDestroyedError once it was destroyed after this client's deletion."""
        if self._history_secret is None:
            self._history_secret = run_history_secret(self._key_file, self.keys, self.run_id, self._run_tag)
        return self._history_secret

    def enrolment(self) -> tuple[bytes, bytes | None]:
        """(Ed25519 identity public key, SHA-256 commitment to this run's history secret); the
        commitment is None once that secret was destroyed (the client was deleted from the run)."""
        try:
            commitment = history_commitment(self.run_id, self.client_id, self.history_secret)
        except RunSecretDestroyedError:
            commitment = None
        return self.keys.identity.public_bytes, commitment

    def set_directory(self, signed: SignedDirectory | bytes) -> dict[int, bytes]:
        """Use the identity keys of a directory signed by the pinned authority (``federation.authority``):
        refused (ClientRefusedError, nothing changed) if unsigned, not verifiable under the pinned
        authority, for another run, rolled back, not listing this client with its own key, or
        changing a neighbour's key since first seen. Returns the keys now in use."""
        try:
            if isinstance(signed, (bytes, bytearray)):
                signed = SignedDirectory.from_bytes(bytes(signed))
            keys = self._pins.accept(signed)
        except FederationError as error:
            raise ClientRefusedError(f"directory refused: {error}") from None
        self._identity_directory = keys
        return dict(keys)

    def trust_unsigned_directory(self, identity_keys: dict[int, bytes]) -> None:
        """Use identity keys as the server gives them, unsigned: a server that deviates can then
        substitute every neighbour's key and read this client's input. Only for a client run with
        ``--trust-server-directory`` (tests, a server the client operates itself)."""
        self._identity_directory = dict(identity_keys)

    def check_request(self, message: bytes, plan_bytes: bytes) -> None:
        """Before training: the round's first SecAgg+ request and plan against this client's policy
        (PolicyRefusedError names the knob), so a refused round uploads nothing at all."""
        try:
            request = decode_message(message)
        except MalformedMessageError as error:
            raise ClientRefusedError(f"the round's first request is malformed: {error}") from None
        if not isinstance(request, AdvertiseKeysRequest):
            raise ClientRefusedError("a round starts with its advertise-keys request")
        plan = RoundPlan.from_bytes(plan_bytes)
        self.policy.check_plan(plan)
        self.policy.check_round(request.config, plan)

    # --- one round ---------------------------------------------------------------------------

    def prepare(self, plan_bytes: bytes, global_parameters: np.ndarray, record: bool = True,
                shared: np.ndarray | None = None) -> TrainReport:
        """Train locally from the global model, then clip, encode, noise and wrap the update.

        The integer vector waits for the SecAgg+ masked-input stage; the round's SecAgg+ client is
        created here, so a client that never prepared cannot answer the round's messages. With
        ``record`` (the history policy kept this client this round) and history on, the report
        carries the sealed history record of the contribution; its chain is adopted only when
        the server confirms it stored it (:meth:`confirm_record`). LoCoDL's ``shared`` is the
        server's v (``global_parameters`` its y); its local iterations run even when the client
        then declines to upload, so its state keeps step with everyone's.
        """
        plan = RoundPlan.from_bytes(plan_bytes)
        self.policy.check_plan(plan)  # PolicyRefusedError names the knob; nothing trained or uploaded
        if plan.dimension != global_parameters.size:
            raise ClientRefusedError(f"plan dimension {plan.dimension} != model size {global_parameters.size}")
        stateful = self.learner.keeps_state
        if stateful:
            if shared is None:
                raise ClientRefusedError("a LoCoDL round needs the server's v with the plan")
            result = self.learner.local_round(plan.round_index, plan.round_seed, global_parameters, shared)
        releases = self._releases(plan)
        try:
            self._own_ledger.check(plan.round_index, releases)  # decline before spending any effort
        except BudgetExceededError as error:
            raise ClientRefusedError(str(error)) from None
        self._round_releases, self._round_index = releases, plan.round_index
        if not stateful:
            result = self.learner.train(global_parameters, plan.round_seed)
        clipped, _norm = clip_l2(result.update.astype(np.float64), plan.clip_norm)  # the norm stays here
        codec = plan.codec()
        coordinates = codec.encode(clipped, plan.round_seed, self.client_id)
        noise = self._noise(plan, coordinates)
        sealed = None
        if record and self.config.history:
            contribution = coordinates + noise if plan.noise.mode == "local" else coordinates
            sealed = self._seal_record(plan, codec.decode(contribution, plan.round_seed, self.client_id,
                                                          plan.dimension))
        coordinates += noise
        if stateful:  # LoCoDL's d_i as the sum will hold it, noise included
            self.learner.uploaded(plan.round_index, codec.decode(coordinates, plan.round_seed, self.client_id,
                                                                 plan.dimension))
        self._pending_input = wrap(coordinates, plan.bits)
        self._plan_bytes = bytes(plan_bytes)
        # Its policy's survivor floor is also its floor in the consistency round (secagg.client).
        self._secagg = SecAggClient(self.client_id, self.keys.identity, self._identity_directory,
                                    minimum_survivors=self.policy.min_survivors)
        return TrainReport(self.client_id, result.num_samples, result.loss, tuple(result.events), sealed)

    # --- history records ---------------------------------------------------------------------

    def _chain_state(self) -> ChainState:
        if self._chain is None:
            self._chain_file = ChainFile(self._chain_path, self.learner.trainer.dimension)
            self._chain = self._chain_file.load()
        return self._chain

    def _seal_record(self, plan: RoundPlan, contribution: np.ndarray) -> bytes:
        """Seal this round's record and write the chain state once, before the record leaves.

        The record is differential only against a record the server confirmed storing and
        nothing uploaded since: a pending record still unconfirmed (the client dropped out of
        that round, its confirmation was lost, or the process restarted and the server did not
        confirm it again) may or may not be stored, so the record is a key frame, which opens
        either way.
        """
        config = run_record_config(
            dimension=plan.dimension, clip_norm=plan.clip_norm, bits_per_entry=self.config.history_bits_per_entry,
            lattice=self.config.history_lattice, codec_lattice=plan.lattice, step=plan.step,
            noise_mode=plan.noise.mode, noise_mechanism=plan.noise.mechanism, noise_parameter=plan.noise.scale)
        state = self._chain_state()
        chain = state.confirmed if state.pending is None else RecordChain()
        if chain.round_index is not None and chain.round_index >= plan.round_index:
            chain = RecordChain()  # not this run's past (a reused run id): restart with a key frame
        built = build_record(contribution, history_secret=self.history_secret, run_id=self.run_id,
                             client_id=self.client_id, round_index=plan.round_index, config=config, chain=chain)
        state = ChainState(chain, built.chain)
        self._chain_file.save(state)  # the round's one write: a crash from here on keeps the pending chain
        self._chain = state
        return built.sealed

    def confirm_record(self, round_index: int) -> bool:
        """The server stored this client's record of ``round_index``: the next record is coded
        against it. Idempotent; False when no record of that round awaits confirmation.

        Changes the state in memory only; it reaches the disk with the next record's write. A
        crash before then leaves the record pending on disk, and the restarted client codes a
        key frame unless the server confirms it again (a resumed coordinator re-confirms the
        last committed round)."""
        state = self._chain_state()
        confirmed = state.confirm(round_index)
        if confirmed is state:
            return False
        self._chain = confirmed
        return True

    def finish_round(self, round_index: int, mean_sent: np.ndarray, included: bool) -> bool:
        """LoCoDL: apply the round's d̄ (``included``: this client's d_i is in the sum). Idempotent;
        False when nothing was pending for that round."""
        if not self.learner.keeps_state:
            raise ClientRefusedError("this run's trainer keeps no state across rounds")
        return self.learner.finish(round_index, mean_sent, included)

    @staticmethod
    def _noise(plan: RoundPlan, coordinates: np.ndarray) -> np.ndarray:
        """This client's integer noise (OS CSPRNG) as the plan announces: (m,) int64, zero in mode "none"."""
        noise = plan.noise.mechanism_object()
        if noise is None:
            return np.zeros_like(coordinates)
        release = release_local if isinstance(noise, LocalNoise) else release_distributed_share
        return release(coordinates, noise).noised - coordinates

    def _releases(self, plan: RoundPlan) -> list[tuple[str, object]]:
        """(ledger stream, event) of each release this round's upload makes."""
        releases = [("dp-sgd", event) for event in self.learner.privacy_events()]
        noise = plan.noise.mechanism_object()
        if noise is not None:
            releases.append((plan.noise.ledger_stream, noise.event()))
        return releases

    def handle(self, message: bytes) -> bytes:
        """Answer one SecAgg+ request of the current round (charging its own ledger right before
        the masked input leaves)."""
        if self._secagg is None:
            raise ClientRefusedError("no round in progress on this client")
        if self._secagg.stage == MASKED_INPUT and self._round_releases:
            try:
                self._own_ledger.charge(self._round_index, self._round_releases)
            except BudgetExceededError as error:
                self._secagg = None
                raise ClientRefusedError(str(error)) from None
            self._round_releases = []
        first = self._secagg.config is None
        reply = self._secagg.handle(message)
        if first:
            # The plan inside the signed round config must be the one this client encoded for.
            if self._secagg.config.application_config != self._plan_bytes:
                self._secagg = None
                raise ClientRefusedError("the round's signed plan differs from the plan this client trained for")
            try:  # the round's cohort, threshold and survivor floor, before the advertisement leaves
                self.policy.check_round(self._secagg.config, RoundPlan.from_bytes(self._plan_bytes))
            except PolicyRefusedError:
                self._secagg = None
                raise
            self._secagg.set_input(self._pending_input)
            self._pending_input = None
        return reply

    # --- FedP3: one secure sum per layer group (federation.fedp3_client) ---------------------

    def prepare_fedp3(self, offer: bytes, start: np.ndarray, keep_masks: dict[str, np.ndarray]) -> TrainReport:
        """``prepare`` of a FedP3 round: ``offer`` is a ``FedP3Offer``'s bytes, ``start`` the
        client's pruned global model ((d,) float32), ``keep_masks`` parameter name -> bool mask of
        its kept entries (only pruned tensors)."""
        from federation.evaluation import data_for, model_for
        from federation.fedp3_client import FedP3ClientRound
        from privacy.fedp3 import layer_groups

        self._fedp3_round = None
        from federation.fedp3_plan import FedP3Offer

        for plan_bytes in FedP3Offer.from_bytes(offer).plans.values():  # every group's plan, before training
            self.policy.check_plan(RoundPlan.from_bytes(plan_bytes))
        layout = layer_groups(model_for(self.config, data_for(self.config)))
        self._fedp3_round, report = FedP3ClientRound.prepare(
            client_id=self.client_id, learner=self.learner, layout=layout, offer_bytes=offer, start=start,
            keep_masks=keep_masks, ledger=self._own_ledger, noise=self._noise, identity=self.keys.identity,
            directory=self._identity_directory, policy=self.policy)
        return report

    def handle_groups(self, messages: dict[int, bytes]) -> dict[int, bytes]:
        """``handle`` of a FedP3 round: this stage's SecAgg+ request of each of the client's layer
        groups (group -> bytes) in, one reply per group out."""
        if self._fedp3_round is None:
            raise ClientRefusedError("no FedP3 round in progress on this client")
        return self._fedp3_round.handle(messages, self._own_ledger)
