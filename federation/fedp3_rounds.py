"""LDP-FedP3 rounds of the in-process run: one SecAgg+ secure sum per layer group.

FedP3 (Yi et al., ICLR 2024, arXiv 2404.09816; docs/ALGORITHMS.md §4) through the real
coordinator, its worker processes, serialized SecAgg+ messages and storage. Per round:

1. The cohort (sampled as for every trainer) gets the round's public assignment of body groups
   (``privacy.fedp3.assign_round`` from the round's public seed); every client uploads its owned
   body groups and the head.
2. Each group g with at least max(2, its noise floor) senders gets its own ``RoundPlan``
   (dimension = the group's size, seed = ``group_seed(round seed, g)``), SecAgg+
   ``RoundConfig`` over its senders (the plan's bytes as application config) and
   ``SecAggServer``. A group with fewer senders is skipped: it keeps its value this round.
3. Each client gets its globally pruned model (``prune_for_client``: owned groups and the head
   dense, other weights magnitude-pruned to its capacity), its masks and its ``FedP3Offer``; it
   trains, clips its groups jointly, encodes and noises each (``federation.fedp3_client``).
4. The five SecAgg+ stages run in lockstep: per stage every live group's server broadcasts,
   each client answers all its groups in one call, the replies go back to their servers and
   every server closes the stage. A client that drops, drops from all its groups; a group whose
   sum aborts keeps its value; the round aborts only when every group's sum does. Each client is
   charged once, before its first masked input leaves (``federation.fedp3_privacy``).
5. Each completed sum is decoded; the per-group means over the surviving senders
   (``group_denominators``, ``average_group_sums``) form one full-length mean update (zero in
   groups without a sum), applied with the server learning rate by ``GlobalModel.apply_update``,
   the step ``restore_model`` replays, so a resumed run rebuilds the same model bit for bit. The
   round commits in one transaction: each group's lattice sum, the mean update, the assignment
   and each group's survivors, the ledger charges and the bytes uploaded.
"""

from __future__ import annotations

import itertools
import os
import time
from datetime import UTC, datetime

import numpy as np

from federation.client_runtime import TrainReport
from federation.config import RunConfig
from federation.errors import ConfigError
from federation.evaluation import GlobalModel
from federation.fedp3_plan import FedP3Offer, group_seed
from federation.fedp3_privacy import FedP3PrivacyPlanner, expected_senders
from federation.fedp3_training import state_to_vector
from federation.parameters import ParameterLayout
from federation.round_logic import (
    ROUND_SEED_BYTES, RoundSetup, checkpoint_due, open_round, public_parameters, secure_sum_bits,
)
from federation.workers import ClientFailure, WorkerPool
from privacy.errors import PrivacyError
from privacy.fedp3 import (
    FedP3Error, GroupLayout, RoundAssignment, assign_round, average_group_sums, group_denominators,
    keep_ratio_for_capacity, layer_groups, owned_body_groups, prune_for_client, upload_weights,
)
from secagg.errors import ProtocolError, RoundAbortedError
from secagg.modular import centered_lift
from secagg.server import AggregateResult, SecAggServer
from secagg.stages import MASKED_INPUT, STAGES
from storage.entities import AggregateWrite, CheckpointWrite, RoundWrite


class FedP3Rounds:
    """The FedP3 rounds of one run (the coordinator's ``_round`` for trainer "fedp3").

    Built before the run is stored, so every check here fails before anything is written:

    Raises:
        ConfigError: the model has fewer body groups than the policy gives a client, or the
            capacity is below what a client's dense groups need; BitWidthError: a configured
            ``bits`` cannot hold a group's sum.
    """

    def __init__(self, config: RunConfig, model: GlobalModel, step: float) -> None:
        self.config = config
        self.layout = layer_groups(model.module)
        self.parameters = ParameterLayout.of(model.module)
        self.step = step
        _check_policy(config, self.layout)
        _check_capacity(config, self.layout)
        sizes = [group.size for group in self.layout.groups]
        self.privacy = FedP3PrivacyPlanner(config, sizes, expected_senders(config, self.layout.body_count), step)
        self.bits = {group: secure_sum_bits(config, size, step, self.privacy.group_shares[group].std)
                     for group, size in enumerate(sizes)}

    # --- one round ---------------------------------------------------------------------------

    def run_round(self, coordinator, pool: WorkerPool, identity_keys: dict[int, bytes], round_index: int):
        """Run round ``round_index`` for ``coordinator`` (its model, repository, cohort sampling,
        dropout simulation and abort record) and return its ``RoundSummary``."""
        from federation.coordinator import RoundSummary

        started = datetime.now(UTC)
        clock = time.perf_counter()
        cohort = coordinator._sample_cohort()
        if len(cohort) < 2:
            return coordinator._abort(round_index, cohort, started, clock, {},
                                      f"only {len(cohort)} eligible clients sampled; at least 2 needed")
        round_seed = os.urandom(ROUND_SEED_BYTES)
        assignment = assign_round(self.config.fedp3_policy, cohort, self.layout.body_count, public_seed=round_seed,
                                  round_index=round_index)
        setups, skipped = self.open_groups(round_index, assignment, round_seed)
        if not setups:
            return coordinator._abort(round_index, cohort, started, clock, {},
                                      "no layer group has enough senders: " + "; ".join(skipped.values()))
        servers = {group: SecAggServer(setup.round_config, {c: identity_keys[c] for c in setup.round_config.client_ids})
                   for group, setup in setups.items()}
        offers = self.offers(coordinator.model, round_index, round_seed, assignment, setups)
        reports = pool.call("prepare_fedp3", offers)
        drops = coordinator._dropouts(list(offers))
        drops[STAGES[0]] |= {c for c, report in reports.items() if not isinstance(report, TrainReport)}
        aborted, upload, masked_input, charged = self._run_stages(pool, servers, drops, round_index)
        outcomes = {}
        for group, server in servers.items():
            if group in aborted:
                continue
            outcome = server.result
            try:
                self.privacy.settle_group(group, len(outcome.survivors))
            except PrivacyError as error:  # fewer noise shares than calibrated: release nothing of it
                aborted[group] = str(error)
                continue
            outcomes[group] = outcome
        if not outcomes:
            reason = "every layer group's secure sum aborted: " + "; ".join(
                f"group {g}: {why}" for g, why in sorted(aborted.items()))
            refusals = [r for r in reports.values() if isinstance(r, ClientFailure)]
            if refusals:
                reason += f"; {len(refusals)} clients refused, e.g. {refusals[0].error_type}: {refusals[0].message}"
            return coordinator._abort(round_index, cohort, started, clock, drops, reason, charged)

        survivors = {group: tuple(sorted(outcome.survivors)) for group, outcome in outcomes.items()}
        sums = {group: setups[group].plan.codec().decode_sum(outcome.sum, setups[group].plan.round_seed,
                                                             survivors[group], setups[group].plan.dimension)
                for group, outcome in outcomes.items()}
        means = average_group_sums(sums, group_denominators(assignment, self.config.fedp3_weighting, survivors),
                                   self.layout)
        mean_update = self.full_update(means)
        coordinator.model.apply_update(mean_update, self.config.server_learning_rate)
        accuracy, loss = coordinator.model.evaluate()
        in_sum = sorted(set().union(*survivors.values()))
        weights = upload_weights(assignment, self.config.fedp3_weighting)
        checkpoint = CheckpointWrite({"flat": coordinator.model.flat()}) if checkpoint_due(self.config, round_index) \
            else None
        groups = self._group_details(assignment, setups, skipped, aborted, survivors)
        write = RoundWrite(
            round_index=round_index, cohort=cohort, survivors=in_sum, started_at=started,
            finished_at=datetime.now(UTC), dropouts={stage: sorted(ids) for stage, ids in drops.items() if ids},
            client_weights={c: weights[c] for c in in_sum},  # public: each upload's pre-multiplied weight
            parameters=self._public_parameters(round_seed, assignment, setups, groups),
            bytes_uploaded=upload,
            aggregates=(*(AggregateWrite(_lattice_sum(outcomes[g], setups[g]), kind="lattice_sum", name=f"group-{g}")
                          for g in sorted(outcomes)),
                        AggregateWrite(mean_update, kind="mean_update", name="mean_update")),
            checkpoint=checkpoint, ledger_entries=charged,
            audit_details={"accuracy": accuracy, "survivors": len(in_sum),
                           "groups": {g: detail["status"] for g, detail in groups.items()}},
        )
        coordinator.repository.commit_round(coordinator.run_id, write)
        return RoundSummary(round_index, "completed", accuracy, loss, self.privacy.max_epsilon(), len(cohort),
                            len(in_sum), len(cohort) - len(in_sum), upload / len(cohort),
                            time.perf_counter() - clock, masked_input_bytes_per_client=masked_input / len(in_sum))

    def _run_stages(self, pool: WorkerPool, servers: dict[int, SecAggServer], drops: dict[str, set[int]],
                    round_index: int) -> tuple[dict[int, str], int, int, list]:
        """The five SecAgg+ stages of every group's sum in lockstep: one ``handle_groups`` call per
        client and stage. ``drops`` (stage -> clients that vanish before it) gains the clients
        whose call failed. Returns (group -> why its sum aborted, bytes uploaded, of which masked
        inputs, ledger entries charged)."""
        gone: set[int] = set()
        aborted: dict[int, str] = {}
        upload = masked_input = 0
        charged = []
        for stage in STAGES:
            gone |= drops[stage]
            requests: dict[int, dict[int, bytes]] = {}
            for group, server in servers.items():
                if group not in aborted:
                    for client_id, message in server.broadcast().items():
                        if client_id not in gone:
                            requests.setdefault(client_id, {})[group] = message
            if stage == MASKED_INPUT:  # charge once, before any client uploads a masked input
                charged = self.privacy.charge(sorted(requests), round_index)
            replies = pool.call("handle_groups", {c: (messages,) for c, messages in requests.items()})
            for client_id, reply in replies.items():
                if isinstance(reply, ClientFailure):  # a client that fails leaves every group
                    gone.add(client_id)
                    drops[stage].add(client_id)
                    continue
                for group, data in reply.items():
                    if group not in requests[client_id]:
                        continue
                    try:
                        servers[group].receive(client_id, data)
                    except ProtocolError:  # this sum goes on without the client
                        continue
                    upload += len(data)
                    if stage == MASKED_INPUT:
                        masked_input += len(data)
            for group, server in servers.items():
                if group not in aborted:
                    try:
                        server.advance()
                    except RoundAbortedError as error:  # this group keeps its value
                        aborted[group] = str(error)
        return aborted, upload, masked_input, charged

    def open_groups(self, round_index: int, assignment: RoundAssignment,
                    round_seed: bytes) -> tuple[dict[int, RoundSetup], dict[int, str]]:
        """Each group's plan and SecAgg+ configuration over its senders (group -> setup), or why
        it is skipped this round (group -> reason)."""
        setups, skipped = {}, {}
        for group in self.layout.groups:
            senders = assignment.senders(group.index)
            share = self.privacy.group_shares[group.index]
            needed = max(2, share.floor)
            if len(senders) < needed:
                skipped[group.index] = f"group {group.index} ({group.name}) has {len(senders)} senders, " \
                                       f"{needed} needed"
                continue
            setups[group.index] = open_round(
                self.config, round_index=round_index, cohort=senders, dimension=group.size, step=self.step,
                bits=self.bits[group.index], noise=share, round_seed=group_seed(round_seed, group.index))
        return setups, skipped

    def offers(self, model: GlobalModel, round_index: int, round_seed: bytes, assignment: RoundAssignment,
               setups: dict[int, RoundSetup]) -> dict[int, tuple]:
        """``ClientRuntime.prepare_fedp3`` arguments of every client that uploads a group with a
        sum this round: (offer bytes, its pruned model (d,) float32, keep masks of its pruned
        tensors)."""
        state = model.module.state_dict()
        event = self.privacy.round_event() if self.privacy.noise is not None else None
        weights = upload_weights(assignment, self.config.fedp3_weighting)
        arguments = {}
        for client_id in assignment.client_ids:
            groups = [group for group in assignment.uploaded_by(client_id) if group in setups]
            if not groups:
                continue
            owned = assignment.owned_by(client_id)
            ratio = keep_ratio_for_capacity(self.layout, owned, self.config.fedp3_capacity)
            pruned = prune_for_client(state, self.layout, owned, ratio)
            offer = FedP3Offer(round_index, round_seed, {g: setups[g].round_config.application_config for g in groups},
                               weights[client_id], self.config.fedp3_clipping, ratio, event)
            masks = {name: mask for name, mask in pruned.masks.items() if not mask.all()}
            arguments[client_id] = (offer.to_bytes(), state_to_vector(pruned.state, self.parameters), masks)
        return arguments

    def full_update(self, means: dict[int, np.ndarray]) -> np.ndarray:
        """(d,) float32 mean update in the model's parameter order: each group's mean in its
        parameters' places, zero in every group without a mean (it keeps its value)."""
        update = np.zeros(self.parameters.size, dtype=np.float32)
        for group, mean in means.items():
            for name, values in self.layout.split_vector(mean, group).items():
                update[self.parameters.slice_of(name)] = values.ravel()
        return update

    # --- what the round stores ---------------------------------------------------------------

    def _group_details(self, assignment, setups, skipped, aborted, survivors) -> dict[str, dict]:
        details = {}
        for group in self.layout.groups:
            g = group.index
            status = "completed" if g in survivors else "aborted" if g in aborted else "skipped"
            detail = {"name": group.name, "size": group.size, "status": status,
                      "senders": list(assignment.senders(g)), "survivors": list(survivors.get(g, ()))}
            if g in aborted or g in skipped:
                detail["reason"] = aborted.get(g) or skipped[g]
            if g in setups:
                detail["plan"] = public_parameters(setups[g])
            details[str(g)] = detail
        return details

    def _public_parameters(self, round_seed, assignment, setups, groups) -> dict:
        config = self.config
        return {"trainer": "fedp3", "policy": config.fedp3_policy, "weighting": config.fedp3_weighting,
                "clipping": config.fedp3_clipping, "capacity": config.fedp3_capacity,
                "round_seed": round_seed.hex(), "dimension": self.parameters.size, "lattice": config.lattice,
                "step": self.step, "clip_norm": config.clip_norm, "noise": config.noise,
                "mechanism": config.mechanism,
                "assignment": {str(c): sorted(owned) for c, owned in assignment.ownership},
                "groups": groups}


def _lattice_sum(outcome: AggregateResult, setup: RoundSetup) -> np.ndarray:
    return centered_lift(outcome.sum, setup.plan.bits)


def _check_policy(config: RunConfig, layout: GroupLayout) -> None:
    try:
        assign_round(config.fedp3_policy, range(config.clients), layout.body_count, public_seed=bytes(32))
    except FedP3Error as error:
        raise ConfigError(f"fedp3_policy {config.fedp3_policy} does not fit model {config.model} "
                          f"({layout.body_count} body layer groups and a head): {error}") from None


def _check_capacity(config: RunConfig, layout: GroupLayout) -> None:
    """Every set of groups the policy can give a client must fit ``fedp3_capacity`` dense."""
    groups = layout.body_count
    if config.fedp3_policy == "OPR2":
        owned_sets = [set(pair) for pair in itertools.combinations(range(groups), 2)]
    else:
        owned_sets = [owned_body_groups(config.fedp3_policy, base, groups, groups) for base in range(groups)]
    for owned in owned_sets:
        try:
            keep_ratio_for_capacity(layout, owned, config.fedp3_capacity)
        except FedP3Error as error:
            raise ConfigError(f"fedp3_capacity {config.fedp3_capacity} is too small for policy "
                              f"{config.fedp3_policy}: {error}") from None
