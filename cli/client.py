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


@client.command("run")
@_common
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
def run_client(enrolment_token, data_file, poll_wait, exit_when_done, threads, crash_at, as_json, **common):
    """Enrol (first time), then take part in rounds until the run completes.

    Network failures are retried with exponential backoff; if this process is killed mid-round
    and restarted, it sits out that round and rejoins the next.
    """
    import torch

    from federation.http_client import ParticipantProcess

    torch.set_num_threads(threads)
    options = _options(**common, enrolment_token=enrolment_token, data_file=Path(data_file) if data_file else None,
                       poll_wait=poll_wait, exit_when_done=exit_when_done, crash_at=crash_at)
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
    later rounds. Exits 0 when the request is shredded, 1 otherwise.
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
    sys.exit(0 if result["state"] == "shredded" else 1)
