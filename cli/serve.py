"""``fedvault serve``: run a federated training run as an HTTP service for real client processes."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import click

from cli.options import database_option
from cli.run import config_options, config_values


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with the run's settings (a [run] table or top-level keys); flags override it. "
                   "Only for a new run: a state directory that already serves a run resumes it.")
@config_options
@database_option
@click.option("--state-dir", type=click.Path(file_okay=False), default="fedvault-server", show_default=True,
              envvar="FEDVAULT_STATE_DIR", show_envvar=True,
              help="Private folder (0700) for the server's secrets, the run it serves and the open round's "
                   "journal. Restart with the same --state-dir and --db to resume.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on (0.0.0.0: all).")
@click.option("--port", type=click.IntRange(1, 65535), default=8443, show_default=True, help="TCP port.")
@click.option("--certfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS certificate chain (PEM). With --keyfile the server speaks HTTPS only.")
@click.option("--keyfile", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TLS private key (PEM) for --certfile.")
@click.option("--min-clients", type=click.IntRange(min=2), default=None,
              help="Online clients needed before a round starts (default: half the run's clients, at least 2).")
@click.option("--train-timeout", type=click.FloatRange(min=0.1), default=120.0, show_default=True,
              help="Seconds clients get for local training plus their first message.")
@click.option("--stage-timeout", type=click.FloatRange(min=0.1), default=30.0, show_default=True,
              help="Seconds each later SecAgg+ stage waits for answers; late clients count as dropped.")
@click.option("--round-interval", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Pause between rounds, seconds.")
@click.option("--online-window", type=click.FloatRange(min=1.0), default=60.0, show_default=True,
              help="A client that polled within this many seconds counts as online for sampling.")
@click.option("--max-skew", type=click.IntRange(min=1), default=120, show_default=True,
              help="Accepted difference between a request's signed timestamp and the server clock, seconds.")
@click.option("--enrolment-tokens", "tokens_file", type=click.Path(dir_okay=False), default=None,
              help="Write every client id's enrolment token to this JSON file (mode 0600) before serving; "
                   "hand token i to client i only.")
@click.option("--name", default=None, help="Name of a new run.")
@click.option("--log-level", type=click.Choice(["critical", "error", "warning", "info", "debug"]), default="info",
              show_default=True, help="Server log level.")
def serve(config_file, db, state_dir, host, port, certfile, keyfile, min_clients, train_timeout, stage_timeout,
          round_interval, online_window, max_skew, tokens_file, name, log_level, **flags):
    """Serve a federated run over HTTP(S) to `fedvault client` processes.

    Clients enrol with an enrolment token (binding their Ed25519 identity key to their id) and
    sign every request; the server runs the five SecAgg+ stages (consistency round included) with
    deadlines, sees only masked vectors and their sum, and commits each round to the database in one transaction. Killing the
    server at any point and starting it again with the same --db and --state-dir resumes the open
    round (or aborts it cleanly) and loses nothing committed. The operator token (for the
    /v1/operator endpoints) is in the state directory unless FEDVAULT_OPERATOR_TOKEN is set.
    Use one server process per run (state lives in it): no --workers.
    """
    import logging

    import uvicorn

    from federation.config import RunConfig
    from federation.service.app import create_app
    from federation.service.auth import ReplayGuard, enrolment_token
    from federation.service.rounds import RoundManager, ServiceSettings
    from federation.service.state import StateDirectory, write_private_file
    from storage.repositories import Repository

    if (certfile is None) != (keyfile is None):
        raise click.UsageError("give both --certfile and --keyfile for TLS, or neither")
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    state = StateDirectory(Path(state_dir))
    server_secrets = state.secrets()
    repository = Repository.open(db)
    run_id = state.run_id()
    settings_given = config_file is not None or any(value is not None for value in flags.values())
    if run_id is None:
        config = RunConfig.from_dict(config_values(config_file, flags))
        if config.trainer not in ("sgd", "dpsgd"):
            raise click.UsageError(f"the HTTP service runs one secure sum per round with sgd or dpsgd; trainer "
                                   f"{config.trainer} runs with `fedvault run`")
        run_id = repository.create_run(config.to_dict(), name=name).id
        state.set_run_id(run_id)
        verb = "serving new run"
    else:
        if settings_given:
            raise click.UsageError(f"{state_dir} already serves run {run_id}; its settings come from the database "
                                   "(use a new --state-dir for a new run)")
        config = RunConfig.from_dict(repository.get_run(run_id).config)
        verb = "resuming run"
    settings = ServiceSettings(
        min_clients=min_clients or max(2, math.ceil(config.clients / 2)), train_timeout=train_timeout,
        stage_timeout=stage_timeout, online_window=online_window, round_interval=round_interval)
    manager = RoundManager(repository, run_id, state, settings)
    app = create_app(manager, server_secrets=server_secrets,
                     replay_guard=ReplayGuard(max_skew_seconds=max_skew))
    if tokens_file:
        tokens = {str(c): enrolment_token(server_secrets.enrolment_key, run_id, c) for c in range(config.clients)}
        write_private_file(Path(tokens_file), json.dumps({"run_id": run_id, "tokens": tokens}, indent=1).encode())
    scheme = "https" if certfile else "http"
    click.echo(f"fedvault {verb} {run_id} on {scheme}://{host}:{port}: {config.dataset}, {config.clients} clients, "
               f"{config.rounds} rounds, {config.model} ({manager.dimension} parameters), {config.lattice} lattice "
               f"at {manager.bits} bits; next round {manager.repository.next_round_index(run_id)}")
    click.echo(f"operator token: {state.operator_token_location}; pid {os.getpid()}")
    if tokens_file:
        click.echo(f"enrolment tokens: {tokens_file}")
    if scheme == "http" and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("warning: serving plain HTTP on a network interface; pass --certfile/--keyfile for TLS", err=True)
    try:
        # Keep idle connections longer than the longest long poll (30 s), so a client rarely sends
        # on a connection the server is closing.
        uvicorn.run(app, host=host, port=port, ssl_certfile=certfile, ssl_keyfile=keyfile, log_level=log_level,
                    access_log=log_level == "debug", timeout_graceful_shutdown=5, timeout_keep_alive=65,
                    server_header=False)
    finally:
        repository.close()
