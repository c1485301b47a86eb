"""``fedvault client``: a real client process for a run served by `fedvault serve`."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from secagg.stages import STAGES


def _common(function):
    options = [
        click.option("--server", "server_url", required=True, envvar="FEDVAULT_SERVER", show_envvar=True,
                     metavar="URL", help="The server, e.g. https://fl.example.org:8443."),
        click.option("--client-id", type=click.IntRange(min=0), required=True, envvar="FEDVAULT_CLIENT_ID",
                     show_envvar=True, help="This client's id (the one its enrolment token was issued for)."),
        click.option("--key-dir", type=click.Path(file_okay=False), default="fedvault-client", show_default=True,
                     envvar="FEDVAULT_KEY_DIR", show_envvar=True,
                     help="Folder of this client's key file client-<id>.key (identity key and history secret, "
                          "created 0600 on first run). Back it up: without it the client cannot act or "
                          "ask for deletion."),
        click.option("--cafile", type=click.Path(exists=True, dir_okay=False), default=None,
                     envvar="FEDVAULT_CAFILE", show_envvar=True,
                     help="CA bundle (PEM) that signed the server's certificate, for a private CA or a "
                          "self-signed server; default: the system's CAs."),
        click.option("--insecure", is_flag=True, default=False,
                     help="Allow plain http:// to a host other than this machine (requests, including a "
                          "deletion request's history secret, then cross the network unencrypted)."),
        click.option("--retry-max-delay", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                     help="Longest backoff between retries of a failed request, seconds."),
        click.option("--give-up-after", type=click.FloatRange(min=1.0), default=300.0, show_default=True,
                     help="Stop retrying one request after this many seconds of failures."),
    ]
    for option in reversed(options):
        function = option(function)
    return function


def _options(server_url, client_id, key_dir, cafile, insecure, retry_max_delay, give_up_after, **extra):
    from federation.errors import FederationError
    from federation.http_client import ClientOptions, RetryPolicy

    retry = RetryPolicy(initial_delay=min(0.2, retry_max_delay), max_delay=retry_max_delay,
                        max_elapsed=give_up_after)
    try:
        return ClientOptions(server_url=server_url, client_id=client_id, key_directory=Path(key_dir),
                             verify=cafile if cafile else True, retry=retry, insecure=insecure, **extra)
    except FederationError as error:
        raise click.UsageError(str(error)) from None


def _crash_point(_ctx, _param, value):
    if value is None:
        return None
    round_text, _, stage = value.partition(":")
    if not round_text.isdigit() or stage not in STAGES:
        raise click.BadParameter(f"expected ROUND:STAGE with STAGE one of {', '.join(STAGES)}")
    return int(round_text), stage


@click.group()
def client() -> None:
    """Take part in a run served by `fedvault serve`, or ask for this client's data to be deleted.

    The client keeps its identity key and history secret in a local key file (mode 0600), signs
    every request with that key, trains on its own data, and sends only masked, lattice-coded,
    noised updates. See `fedvault client run --help`.
    """


def _policy(policy_file, overrides):
    """The client's policy: safe defaults, then the TOML file, then the flags (one readable line on error)."""
    from federation.client_policy import ClientPolicy, PolicyError

    try:
        policy = ClientPolicy.from_toml(policy_file) if policy_file else ClientPolicy()
        changes = {k: v for k, v in overrides.items() if v is not None and v != ()}
        return policy.replace(**changes)
    except PolicyError as error:
        raise click.UsageError(str(error)) from None


@client.command("run")
@_common
@click.option("--authority-fingerprint", envvar="FEDVAULT_AUTHORITY_FINGERPRINT", show_envvar=True, default=None,
              help="Fingerprint of the operator's enrolment authority, given to you out of band with the enrolment "
                   "token (`fedvault authority fingerprint` on the operator's side). Pinned for the run on first "
                   "start; neighbours' keys are then used only from a directory that authority signed.")
@click.option("--trust-server-directory", is_flag=True, default=False,
              help="Use the server's unsigned list of identity keys instead of an authority-signed directory. "
                   "A deviating server can then substitute every neighbour and read this client's update.")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TOML file of this client's privacy policy (knobs of federation.client_policy.ClientPolicy); "
                   "flags below override it; defaults: noise required, t >= k/2, cohort >= 3, survivors >= 2.")
@click.option("--allow-noise-mode", "allowed_noise_modes", multiple=True,
              type=click.Choice(["local", "distributed", "none"]),
              help="A noise mode this client accepts (repeat; default: local and distributed; name none to "
                   "accept rounds without noise).")
@click.option("--allow-mechanism", "allowed_mechanisms", multiple=True,
              type=click.Choice(["skellam", "discrete_gaussian"]), help="A noise mechanism this client accepts (repeat).")
@click.option("--allow-lattice", "allowed_lattices", multiple=True, type=click.Choice(["Z", "A2", "D4", "E8"]),
              help="A lattice this client accepts (repeat).")
@click.option("--min-noise-multiplier", type=click.FloatRange(min=0.0), default=None,
              help="Least σ/Δ₂ of the noise this client adds itself to one upload (a variance floor).")
@click.option("--max-round-epsilon", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Largest ε (at the policy's δ) one upload may cost, as this client computes it from the plan.")
@click.option("--max-run-epsilon", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="This client's own ε budget over the whole run (its ledger uses the smaller of this and the "
                   "run's announced budget).")
@click.option("--max-clip-norm", type=click.FloatRange(min=0.0, min_open=True), default=None,
              help="Largest clip norm this client accepts.")
@click.option("--min-cohort", type=click.IntRange(min=2), default=None, help="Fewest clients a round may sample.")
@click.option("--min-threshold", type=click.IntRange(min=1), default=None,
              help="Lowest SecAgg+ threshold t a round may use.")
@click.option("--min-survivors", type=click.IntRange(min=1), default=None,
              help="Fewest survivors a round may complete with.")
@click.option("--enrolment-token", envvar="FEDVAULT_ENROLMENT_TOKEN", show_envvar=True, default=None,
              help="Operator-issued token binding this client id to this key file's identity key (needed on the "
                   "first run; repeating it is harmless).")
@click.option("--data", "data_file", type=click.Path(exists=True, dir_okay=False), default=None,
              help="Train on this .npz (arrays 'features' (N, F) and 'labels' (N,)) instead of the run's "
                   "bundled shard for this id.")
@click.option("--poll-wait", type=click.FloatRange(0.0, 30.0), default=20.0, show_default=True,
              help="Long-poll the server for up to this many seconds per request.")
@click.option("--exit-when-done/--stay", default=True, show_default=True,
              help="Exit once the run has completed all its rounds.")
@click.option("--threads", type=click.IntRange(min=1), default=1, show_default=True,
              help="Torch threads for local training.")
@click.option("--crash-at", callback=_crash_point, default=None, hidden=True,
              help="(testing) SIGKILL this process on receiving STAGE's request of ROUND, e.g. 2:masked_input.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print a JSON summary at the end.")
def run_client(enrolment_token, data_file, poll_wait, exit_when_done, threads, crash_at, as_json,
               authority_fingerprint, trust_server_directory, policy_file, allowed_noise_modes, allowed_mechanisms,
               allowed_lattices, min_noise_multiplier, max_round_epsilon, max_run_epsilon, max_clip_norm, min_cohort,
               min_threshold, min_survivors, **common):
    """Enrol (first time), then take part in rounds until the run completes.

    Each round is checked against this client's own policy before anything is trained or
    uploaded; a round below it is sat out with a message naming the knob. Neighbours' identity
    keys come only from a directory signed by the pinned authority. Network failures are retried
    with exponential backoff; if this process is killed mid-round and restarted, it sits out that
    round and rejoins the next.
    """
    import torch

    from federation.http_client import ParticipantProcess

    policy = _policy(policy_file, dict(
        allowed_noise_modes=allowed_noise_modes, allowed_mechanisms=allowed_mechanisms,
        allowed_lattices=allowed_lattices, min_noise_multiplier=min_noise_multiplier,
        max_round_epsilon=max_round_epsilon, max_run_epsilon=max_run_epsilon, max_clip_norm=max_clip_norm,
        min_cohort=min_cohort,
        min_threshold=min_threshold, min_survivors=min_survivors))
    torch.set_num_threads(threads)
    options = _options(**common, enrolment_token=enrolment_token, data_file=Path(data_file) if data_file else None,
                       poll_wait=poll_wait, exit_when_done=exit_when_done, crash_at=crash_at,
                       authority_fingerprint=authority_fingerprint, trust_server_directory=trust_server_directory,
                       policy=policy)
    echo = None if as_json else (lambda line: click.echo(line))
    participant = ParticipantProcess(options, echo=echo)
    summary = participant.run()
    if as_json:
        click.echo(json.dumps(summary.__dict__, indent=2))
    sys.exit(0)


@client.command("request-deletion")
@_common
@click.option("--timeout", type=click.FloatRange(min=1.0), default=600.0, show_default=True,
              help="Wait this many seconds at most for the server to finish the deletion.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print the request as JSON.")
def request_deletion_command(timeout, as_json, **common):
    """Ask the server to remove this client's contribution (unlearning) and delete its data.

    The request is signed with this client's enrolled identity key and releases its history
    secret, so the server can open (only) this client's sealed history records to unlearn them;
    it runs between rounds, then the records are crypto-shredded and the client is refused from
    later rounds. The secret released is this run's only; once the server confirms the shredding
    the client destroys it. Exits 0 when the request is shredded, 1 otherwise.
    """
    from federation.http_client import request_deletion

    result = request_deletion(_options(**common), timeout=timeout)
    if as_json:
        click.echo(json.dumps(result, indent=2))
    else:
        extra = ""
        if result.get("model_version") is not None:
            extra = f": new model version {result['model_version']}, {result['records_shredded']} records shredded"
        click.echo(f"deletion request {result['request_id']} for client {result['client_id']}: "
                   f"{result['state']}{extra}")
        if result.get("history_secret_destroyed"):
            click.echo(f"client {result['client_id']}: this run's history secret destroyed")
    sys.exit(0 if result["state"] == "shredded" else 1)


@client.command("fingerprint")
@click.option("--client-id", type=click.IntRange(min=0), required=True, envvar="FEDVAULT_CLIENT_ID",
              show_envvar=True, help="This client's id.")
@click.option("--key-dir", type=click.Path(file_okay=False), default="fedvault-client", show_default=True,
              envvar="FEDVAULT_KEY_DIR", show_envvar=True,
              help="Folder of this client's key file (created 0600 here if missing).")
@click.option("--json", "as_json", is_flag=True, default=False,
              help="Print {client_id, identity_public_key, fingerprint} as JSON (what the operator signs).")
def fingerprint_command(client_id, key_dir, as_json):
    """Show this client's identity key and its fingerprint, for the operator to sign.

    Creates the key file on first use. Read the fingerprint to the operator over a channel the
    server does not control (in person, phone, a signed e-mail); the operator signs the run's
    directory only with keys whose fingerprints match (`fedvault authority sign-directory`), and
    gives you the authority's fingerprint in return (`fedvault client run --authority-fingerprint`).
    """
    from federation.authority import fingerprint
    from federation.http_client import key_path
    from federation.keystore import load_or_create_keys

    keys = load_or_create_keys(key_path(Path(key_dir), client_id), client_id)
    public = keys.identity.public_bytes
    if as_json:
        click.echo(json.dumps({"client_id": client_id, "identity_public_key": public.hex(),
                               "fingerprint": fingerprint(public)}))
    else:
        click.echo(f"client {client_id}")
        click.echo(f"identity key  {public.hex()}")
        click.echo(f"fingerprint   {fingerprint(public)}")
