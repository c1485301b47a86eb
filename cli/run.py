"""`fedvault run`: a complete privacy-preserving federated training run, persisted in SQLite."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from cli.options import database_option, json_option

# flag name -> (RunConfig key, click type, help)
_CONFIG_FLAGS = {
    "dataset": ("dataset", click.Choice(["digits", "breast_cancer", "mnist5k", "synthetic"]),
                "Bundled offline dataset."),
    "split": ("split", click.Choice(["iid", "dirichlet", "shards"]), "How the training data is split across clients."),
    "alpha": ("dirichlet_alpha", float, "Dirichlet concentration of the label skew (smaller = more skew)."),
    "clients": ("clients", int, "Number of enrolled clients."),
    "model": ("model", click.Choice(["logreg", "mlp", "cnn"]), "Model architecture."),
    "rounds": ("rounds", int, "Federated rounds."),
    "sample-rate": ("sample_rate", float, "Poisson sampling rate q of clients per round (recorded for accounting)."),
    "local-epochs": ("local_epochs", int, "Local epochs per round."),
    "batch-size": ("batch_size", int, "Local mini-batch size."),
    "lr": ("learning_rate", float, "Local learning rate."),
    "server-lr": ("server_learning_rate", float, "Server step size on the mean update."),
    "trainer": ("trainer", click.Choice(["sgd", "dpsgd", "locodl", "fedp3"]),
                "Local trainer: plain SGD, record-level DP-SGD (Opacus; its ε is record-level, budgeted apart from "
                "the update noise's client-level ε, --record-budget), LoCoDL (logreg only; local training with control "
                "variates that converges to the exact optimum, every client in every round), or LDP-FedP3 "
                "(pruned models, partial uploads, one secure sum per layer group; mlp or cnn)."),
    "locodl-l2": ("locodl_l2", float, "LoCoDL: λ of the L2 term of the logistic regression (its strong convexity)."),
    "locodl-smoothness": ("locodl_smoothness", float,
                          "LoCoDL: public smoothness bound L (default: Böhning's bound on the run's data)."),
    "fedp3-policy": ("fedp3_policy", click.Choice(["LowerB", "OPU2", "OPU3", "OPR2"]),
                     "FedP3: which body layer groups each client owns and uploads besides the head (OPU2: two "
                     "neighbouring groups; the policy needs that many body groups: mlp has 1, cnn 3)."),
    "fedp3-weighting": ("fedp3_weighting", click.Choice(["mean", "layers"]),
                        "FedP3: each group's average over its senders, plain or weighted by the groups a client uploads."),
    "fedp3-clipping": ("fedp3_clipping", click.Choice(["joint", "per_group"]),
                       "FedP3: clip a client's uploaded groups to --clip together, or each to clip/√k."),
    "fedp3-capacity": ("fedp3_capacity", float,
                       "FedP3: fraction (0, 1] of the model's parameters a client holds; the server magnitude-prunes "
                       "the weights it does not own to fit (1.0: no pruning)."),
    "lattice": ("lattice", click.Choice(["Z", "A2", "D4", "E8"]), "Lattice of the dithered quantizer."),
    "clip": ("clip_norm", float, "L2 clip norm C of each client's update."),
    "step": ("step", float, "Lattice step (default: derived from the clip norm and model size)."),
    "bits": ("bits", int, "Bits per coordinate of the secure sum (default: smallest safe width)."),
    "neighbours": ("neighbours", int, "SecAgg+ neighbours k per client (default: from the parameter table)."),
    "threshold": ("threshold", int, "Shamir reconstruction threshold t (default: from the parameter table)."),
    "dropout": ("dropout_rate", float, "Simulated probability that a client drops out during a round."),
    "noise": ("noise", click.Choice(["distributed", "local", "none"]),
              "Integer DP noise: shares of a central guarantee, a local (LDP) guarantee per client, or none."),
    "mechanism": ("mechanism", click.Choice(["skellam", "discrete_gaussian"]),
                  "Integer noise: Skellam or discrete Gaussian, sampled exactly from the OS CSPRNG."),
    "epsilon": ("target_epsilon", float, "Target ε per client over the whole run (noise is calibrated to it)."),
    "delta": ("delta", float, "δ of the (ε, δ) guarantee."),
    "budget": ("budget_epsilon", float, "Per-client ε budget in the ledger (default: --epsilon)."),
    "record-budget": ("record_budget_epsilon", float,
                      "Per-client record-level ε budget (DP-SGD inside the client; default: --budget). Record- and "
                      "client-level ε are different units, each with its own budget; with --trainer dpsgd the "
                      "DP-SGD noise is calibrated so a client in every round ends at this budget."),
    "dpsgd-noise": ("dpsgd_noise_multiplier", float,
                    "DP-SGD noise multiplier σ (default: calibrated per client to --record-budget over the run)."),
    "relation": ("relation", click.Choice(["zero-out", "add-remove"]),
                 "Neighbouring relation of the central ε: zero-out (default; the client's data replaced by nothing, "
                 "its noise share still in the sum: participation is visible to the server anyway) or add-remove "
                 "(the client and its share leave the sum; skellam only, accounted exactly, much more noise)."),
    "local-epsilon": ("local_epsilon", float,
                      "Local ε floor per round: each upload alone is at most this (ε, δ)-DP against a server "
                      "colluding with every other client (replace-one, ≈2C sensitivity); the noise share grows "
                      "to meet it when the central target needs less."),
    "checkpoint-every": ("checkpoint_every", int, "Store a model checkpoint every K rounds."),
    "seed": ("seed", int, "Seed of the data split, model init and dropout simulation (never of secrets)."),
    "workers": ("workers", int, "Client worker processes."),
}


# switch name -> (RunConfig key, help): --NAME/--no-NAME
_CONFIG_SWITCHES = {
    "history": ("history", "Clients upload a sealed history record each round, so a client can be unlearned "
                           "later (default on; off for locodl and fedp3, whose uploads are not one FedAvg update)."),
}


def config_options(function):
    """Every RunConfig flag as a click option (shared by `run` and `serve`)."""
    for switch, (key, text) in reversed(_CONFIG_SWITCHES.items()):
        function = click.option(f"--{switch}/--no-{switch}", key, default=None, help=text)(function)
    for flag, (key, kind, text) in reversed(_CONFIG_FLAGS.items()):
        function = click.option(f"--{flag}", key, type=kind, default=None, help=text)(function)
    return function


def config_values(config_file: str | None, flags: dict) -> dict:
    """RunConfig keys from the TOML file, overridden by the flags that were given."""
    from federation.config import NO_HISTORY_TRAINERS, load_config_file

    values = load_config_file(config_file) if config_file else {}
    values.update({key: value for key, value in flags.items() if value is not None})
    if values.get("trainer") in NO_HISTORY_TRAINERS:
        values.setdefault("history", False)
    return values


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False), default=None,
              help="TOML file with any of the settings below (a [run] table or top-level keys); flags override it.")
@config_options
@database_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False), default="fedvault-out", show_default=True,
              envvar="FEDVAULT_OUT", help="Folder for plots and client key files.")
@click.option("--resume", "resume_run", type=int, default=None,
              help="Continue run ID from its last committed round (settings come from the stored run).")
@click.option("--baseline/--no-baseline", default=False, show_default=True,
              help="Also train the non-private float32 FedAvg baseline and report it beside fedvault.")
@click.option("--plots/--no-plots", default=True, show_default=True, help="Write PNG plots to --out.")
@json_option
def run(config_file, db, out_dir, resume_run, baseline, plots, as_json, **flags):
    """Run a private federated training job end to end.

    Clients train locally, clip, lattice-encode and noise their updates, and mask them with
    SecAgg+; the server sees only the masked vectors and their sum. Every round is committed to
    the database with its privacy-ledger charges. Defaults: digits, 50 clients, Dirichlet 1.0,
    logistic regression, 15 rounds, distributed Skellam noise at ε = 8, about a minute on two cores.
    """
    from federation.config import RunConfig
    from federation.runner import execute_run

    config = RunConfig.from_dict(config_values(config_file, flags))
    if resume_run is not None and (config_file or any(v is not None for v in flags.values())):
        raise click.UsageError("--resume takes the stored run's settings; do not combine it with settings")
    report = execute_run(config, db=db, out_dir=Path(out_dir), resume_run=resume_run, baseline=baseline,
                         plots=plots, progress=not as_json, echo=None if as_json else click.echo)
    if as_json:
        click.echo(json.dumps(report, indent=2, sort_keys=True))
    sys.exit(0)
