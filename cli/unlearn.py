"""`fedvault unlearn`: remove one client's contribution from a run's model, with evidence."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from pathlib import Path

import click

from cli.options import database_option, json_option


def _format(value, spec: str = ".4f") -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, spec)


def _render_outcome(outcome, key_file: Path) -> list[str]:
    if outcome.already_done:
        head = f"client {outcome.client_id} was already unlearned by request {outcome.request_id}"
    else:
        head = f"request {outcome.request_id}: authenticated by client {outcome.client_id}'s enrolled identity key, " \
               "fresh, history secret matches its commitment" + (" (resumed)" if outcome.resumed else "")
    lines = [head]
    if outcome.method == "medu":
        lines.append(f"opened {outcome.records_opened} sealed records, correction streamed over "
                     f"{outcome.rounds_walked} stored rounds"
                     + (f", then {outcome.heal_rounds} healing rounds" if outcome.heal_rounds else ""))
    else:
        lines.append(f"retrained {outcome.rounds_walked} rounds without the client (exact oracle)")
    lines += [f"new model version {outcome.model_version} (after round {outcome.round_index + 1})",
              f"shredded {outcome.records_shredded} records; client {outcome.client_id} is deleted and refused from now on",
              f"client side: local record chain removed beside {key_file}",
              f"time {outcome.seconds:.2f} s"]
    return lines


def _render_verification(payload: dict, oracle) -> list[str]:
    rows = [("metric", "unlearned", "retrained")]
    for key, name in (("test_accuracy", "test accuracy"), ("forgotten_accuracy", "accuracy on forgotten data"),
                      ("membership_auc", "MIA AUC on forgotten data"), ("backdoor_success", "backdoor success")):
        rows.append((name, _format(payload["unlearned"][key]), _format(payload["retrained"][key])))
    width = max(len(r[0]) for r in rows)
    lines = [f"verification against retraining ({oracle.rounds_run} rounds from round {oracle.start_round}, "
             f"{oracle.seconds:.1f} s):"]
    lines += [f"  {name:<{width}}  {a:>9}  {b:>9}" for name, a, b in rows]
    lines.append(f"  ‖w_u − w_r‖/‖w_r‖ = {payload['relative_distance']:.4f}; prediction divergence on "
                 f"forgotten data = {payload['forgotten_prediction_divergence']:.4f}")
    return lines


_SETTINGS = ("method", "alpha", "theta", "heal_rounds")


def _request_row(info) -> dict:
    return {"request_id": info.id, "run_id": info.run_id, "client_id": info.client_id, "state": info.state,
            "reason": info.reason, "model_version": info.details.get("model_version"),
            "settings": {key: info.details.get(key) for key in _SETTINGS},
            "updated_at": info.updated_at.isoformat()}


def _render_requests(rows: list[dict]) -> list[str]:
    if not rows:
        return ["no deletion requests"]
    lines = []
    for row in rows:
        settings = ", ".join(f"{key}={value}" for key, value in row["settings"].items())
        line = f"request {row['request_id']}: {row['state']} ({settings}; updated {row['updated_at']})"
        if row["reason"]:
            line += f": {row['reason']}"
        lines.append(line)
    return lines


def _verify_and_report(repository, report: dict, trainer, as_json: bool) -> None:
    """Compare the deletion's model version with the oracle (a scratch retraining) and add the
    verification to ``report``; a failure says the deletion itself is finished and can be re-verified."""
    from cli.main import fedvault_error_types
    from federation.oracle_verification import verification_payload, verify_model_version
    from unlearning.errors import UnlearningError

    try:
        verification, oracle = verify_model_version(repository, report["run_id"], report["client_id"],
                                                    report["model_version"], trainer)
    except fedvault_error_types() as error:
        if as_json:
            click.echo(json.dumps({**report, "verification_error": str(error)}, indent=2, sort_keys=True))
        raise UnlearningError(
            f"request {report['request_id']} is finished (model version {report['model_version']}), but its "
            f"verification failed: {error}; run the same command again to retry it (the deletion is "
            "not repeated)") from error
    report["verification"] = {**verification_payload(verification), "oracle_rounds": oracle.rounds_run,
                              "oracle_start_round": oracle.start_round, "oracle_seconds": oracle.seconds}
    if not as_json:
        click.echo("\n".join(_render_verification(report["verification"], oracle)))


@click.command()
@click.option("--run", "run_id", type=int, required=True, help="The run to unlearn from.")
@click.option("--client", "client_id", type=int, required=True, help="The client to remove.")
@click.option("--key-file", "key_file", type=click.Path(dir_okay=False), default=None,
              help="The client's key file: it signs the request and releases the history secret "
                   "[default: fedvault-out/keys/client-C.key]. Other clients' key files (for retraining "
                   "and healing) are read from the same folder.")
@click.option("--method", type=click.Choice(["medu", "retrain"]), default="medu", show_default=True,
              help="medu: open the client's sealed records and apply the --rule correction (streaming, "
                   "memory independent of the run's length); retrain: retrain without the client, each round "
                   "with its own survivors (a new release: charged to the run's ledger, so it fails on spent "
                   "budgets).")
@click.option("--rule", type=click.Choice(["auto", "calibrated", "fast-fedul"]), default="auto", show_default=True,
              help="medu's correction. calibrated: subtract the client's updates, renormalize the others' "
                   "weights and replay their response estimated from the stored aggregates "
                   "(docs/UNLEARNING.md, 'The correction'); fast-fedul: the fixed per-round shrink "
                   "of Fast-FedUL (--alpha, --theta); auto: calibrated unless the run's aggregates "
                   "carry DP noise, then fast-fedul.")
@click.option("--heal-rounds", type=int, default=0, show_default=True,
              help="Federated rounds of the remaining clients after the correction (medu only; charged to the "
                   "run's ledger).")
@click.option("--alpha", type=float, default=None,
              help="Fast-FedUL contraction α, --rule fast-fedul only [default: 0.07].")
@click.option("--theta", type=float, default=None,
              help="Fast-FedUL correction scale θ, --rule fast-fedul only [default: 1].")
@click.option("--verify", is_flag=True, default=False,
              help="Also retrain without the client in a scratch space (the run's own cohorts, nothing of "
                   "the run written but the verification's audit entry) and compare: test accuracy, accuracy "
                   "and MIA AUC on the forgotten data, backdoor success, relative distance.")
@click.option("--cancel", is_flag=True, default=False,
              help="Cancel the client's open deletion request instead (requested or opened: it fails with the "
                   "reason 'cancelled'; nothing was applied). A request whose model is stored (unlearned) "
                   "cannot be cancelled: run the same unlearn command again to finish it.")
@click.option("--status", "show_status", is_flag=True, default=False,
              help="Only show the client's deletion requests in this run (state, reason, settings); changes "
                   "nothing.")
@click.option("--reason", default="by the operator", show_default=True,
              help="With --cancel: why, stored with the failed request and in the audit log.")
@click.option("--workers", type=int, default=None, help="Worker processes for retraining/healing [default: the run's].")
@database_option
@json_option
def unlearn(run_id, client_id, key_file, method, rule, heal_rounds, alpha, theta, verify, cancel, show_status,
            reason, workers, db, as_json):
    """Remove a client's contribution from a run's model and shred its history.

    The client signs the request with its enrolled identity key and releases its history secret;
    the server checks both, opens only that client's sealed records, applies the unlearning rule
    streaming over the stored rounds, stores a new model version, shreds the records, refuses the
    client from then on and writes it all to the audit log. An error before the new model is
    stored fails the request with the reason (nothing applied; ask again). Running the same command
    again after a crash resumes the request; after success it reports the finished request.
    --cancel ends an open request that is not to be resumed.
    """
    from federation.keystore import KeyFileError, load_keys, run_state_tag
    from federation.retraining import CoordinatorTrainer
    from federation.run_secrets import RunSecretDestroyedError, destroy_run_history_secret, run_history_secret
    from storage.repositories import Repository
    from unlearning.chain_file import chain_path, delete_chain_state
    from unlearning.deletion import UnlearningSettings, cancel_deletion_request, unlearn_client
    from unlearning.requests import sign_deletion_request
    from unlearning.rules import DEFAULT_ALPHA, DEFAULT_THETA

    if cancel and show_status or verify and (cancel or show_status):
        raise click.UsageError("--cancel, --status and --verify exclude each other")
    if show_status:
        with Repository.open(db) as repository:
            rows = [_request_row(info) for info in repository.list_deletion_requests(run_id, client_id)]
        click.echo(json.dumps(rows, indent=2, sort_keys=True) if as_json else "\n".join(_render_requests(rows)))
        return
    if cancel:
        with Repository.open(db) as repository:
            info = cancel_deletion_request(repository, run_id, client_id, reason=reason)
        if as_json:
            click.echo(json.dumps({"request_id": info.id, "run_id": info.run_id, "client_id": info.client_id,
                                   "state": info.state, "reason": info.reason}, indent=2, sort_keys=True))
        else:
            click.echo(f"request {info.id} cancelled: it is failed ({info.reason}); nothing was applied, client "
                       f"{client_id} stays active and may ask again")
        return

    key_path = Path(key_file) if key_file else Path("fedvault-out") / "keys" / f"client-{client_id}.key"
    keys = load_keys(key_path)
    if keys.client_id != client_id:
        raise click.UsageError(f"{key_path} holds client {keys.client_id}'s keys, not client {client_id}'s")
    if rule == "calibrated" and (alpha is not None or theta is not None):
        raise click.UsageError("--alpha and --theta apply to --rule fast-fedul (or auto on a DP run)")
    settings = UnlearningSettings(method=method, rule=rule, heal_rounds=heal_rounds,
                                  alpha=DEFAULT_ALPHA if alpha is None else alpha,
                                  theta=DEFAULT_THETA if theta is None else theta)
    trainer = CoordinatorTrainer(key_path.parent, workers=workers)
    with Repository.open(db) as repository:
        run_tag = run_state_tag(run_id, repository.get_run(run_id).created_at)
        try:  # this run's history secret only (federation.run_secrets): no other run's records open
            secret = run_history_secret(key_path, keys, run_id, run_tag, create=False)
        except RunSecretDestroyedError as error:  # destroyed after an earlier, finished deletion
            done = [r for r in repository.list_deletion_requests(run_id, client_id) if r.state == "shredded"]
            if not done:
                raise click.UsageError(str(error)) from None
            report = {"run_id": run_id, "client_id": client_id, "request_id": done[-1].id,
                      "model_version": done[-1].details["model_version"], "already_done": True,
                      "history_secret_destroyed": True}
            if not as_json:
                click.echo(f"client {client_id} was already unlearned by request {done[-1].id}; its history "
                           f"secret for run {run_id} was destroyed after the shredding")
            if verify:  # a verification that failed after the deletion is retried on its model version
                _verify_and_report(repository, report, trainer, as_json)
            if as_json:
                click.echo(json.dumps(report, indent=2, sort_keys=True))
            return
        except KeyFileError as error:
            raise click.UsageError(str(error)) from None
        request = sign_deletion_request(keys.identity, secret, run_id, client_id)
        outcome = unlearn_client(repository, request, settings=settings, trainer=trainer)
        # The client forgets its last reconstruction and destroys this run's history secret.
        delete_chain_state(chain_path(key_path, run_tag))
        if destroy_run_history_secret(key_path, run_tag, when=datetime.now(UTC).isoformat(timespec="seconds")) \
                and not as_json:
            click.echo(f"client {client_id}: history secret for run {run_id} destroyed (records shredded)")
        report = dict(outcome.__dict__)
        if not as_json:
            click.echo("\n".join(_render_outcome(outcome, key_path)))
        if verify:
            _verify_and_report(repository, report, trainer, as_json)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
