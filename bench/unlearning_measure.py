"""One scenario of the unlearning bench, end to end through the production paths.

1. **Training** (``federation.Coordinator``, what ``fedvault run`` drives): the run without
   history records, then the same run with them (timed back to back in the same process: the
   recording overhead); the second is the run unlearned from.
2. **The oracle**: ``federation.retraining.CoordinatorTrainer.oracle`` (what ``fedvault unlearn
   --verify`` compares against), once, and with DP on twice (two independent retrainings: their
   spread is the noise floor the gaps are read against).
3. **The deletion**: the ``fedvault unlearn --run R --client C --json`` command itself (click's
   in-process runner): signed request, records opened, correction applied, new model version
   stored, records shredded. Its own ``seconds`` (the deletion, authentication to audit) is the
   deletion time; the model measured is the new model version it stored.

Nothing here knows which correction the deletion applies or how the oracle keeps its scratch
space: both are called through their public entry points, so the code on the branch is measured.
A step that fails is recorded with its error and the metrics that need it are left out. One
exception, labelled in every row it touches (``oracle_source``): when the project's oracle fails
(as it did on DP runs before issue 11's scratch-space oracle: it charged the run's own
append-only ledger and raised), the bench retrains by itself: the same configuration through the coordinator into
a fresh database, the client excluded, from the seeded initial model, its own budgets fresh.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.unlearning_metrics import ScenarioEvaluator, gaps, relative_distance
from bench.unlearning_scenarios import Scenario, ScenarioFamily
from federation.coordinator import Coordinator
from federation.retraining import CoordinatorTrainer
from storage import Repository
from unlearning.deletion import current_model


def _train(config, directory: Path) -> tuple[int, float]:
    """Train ``config`` into ``directory``/run.db (keys in ``directory``/keys): (run id, seconds)."""
    directory.mkdir(parents=True, exist_ok=True)
    with Repository.open(str(directory / "run.db")) as repository:
        started = time.perf_counter()
        run_id = Coordinator(config, repository, key_directory=directory / "keys").run().run_id
        return run_id, time.perf_counter() - started


def _oracle(directory: Path, run_id: int, client_id: int, workers: int) -> tuple[np.ndarray, float]:
    """The project's oracle: retrain the run without the client. (parameters, seconds)."""
    with Repository.open(str(directory / "run.db")) as repository:
        started = time.perf_counter()
        retrained = CoordinatorTrainer(directory / "keys", workers=workers).oracle(repository, run_id, {client_id})
        return np.asarray(retrained.parameters, dtype=np.float32), time.perf_counter() - started


def _fallback_oracle(directory: Path, config, client_id: int) -> tuple[np.ndarray, float]:
    """The bench's own retraining (see the module docstring): (parameters, seconds)."""
    scratch = directory / f"fallback-oracle-{time.monotonic_ns()}"
    scratch.mkdir()
    with Repository.open(str(scratch / "oracle.db")) as repository:
        started = time.perf_counter()
        coordinator = Coordinator(config.replace(history=False), repository, key_directory=directory / "keys",
                                  exclude_clients={client_id})
        coordinator.run()
        return coordinator.model.flat(), time.perf_counter() - started


def _unlearn(directory: Path, run_id: int, client_id: int) -> tuple[np.ndarray, dict, float]:
    """``fedvault unlearn`` on the run: (the stored new model, its JSON report, wall seconds)."""
    from click.testing import CliRunner

    from cli.main import fedvault

    arguments = ["unlearn", "--run", str(run_id), "--client", str(client_id), "--db", str(directory / "run.db"),
                 "--key-file", str(directory / "keys" / f"client-{client_id}.key"), "--json"]
    started = time.perf_counter()
    result = CliRunner().invoke(fedvault, arguments)
    seconds = time.perf_counter() - started
    if result.exit_code != 0:
        message = str(result.exception) if result.exception else result.output.strip().splitlines()[-1:]
        raise RuntimeError(f"fedvault unlearn exited {result.exit_code}: {message}")
    report = json.loads(result.output[result.output.index("{"):])
    with Repository.open(str(directory / "run.db")) as repository:
        model = np.asarray(repository.load_checkpoint(run_id).tensors["flat"], dtype=np.float32)
        versions = [c.model_version for c in repository.list_checkpoints(run_id)]
    if report.get("model_version") is not None and report["model_version"] not in versions:
        raise RuntimeError(f"fedvault unlearn reported model version {report['model_version']}, not stored")
    return model, report, seconds


def _history(directory: Path, run_id: int, clients: int) -> dict:
    """Stored sealed-record bytes of the whole run against an fp32 history of the same updates."""
    with Repository.open(str(directory / "run.db")) as repository:
        rounds = repository.list_rounds(run_id)
        final, _ = current_model(repository, run_id)
        stored = sum(r.record_size for c in range(clients) for r in repository.iter_sealed_records(run_id, c))
        survivor_updates = sum(len(info.survivors) for info in rounds if info.status == "completed")
        accuracy = [info for info in rounds if info.status == "completed"]
    fp32 = survivor_updates * final.size * 4
    return {"final": final, "dimension": int(final.size), "rounds_completed": len(accuracy),
            "history_bytes": int(stored), "fp32_history_bytes": int(fp32),
            "history_ratio": fp32 / stored if stored else None}


def _step(errors: dict, name: str, action):
    try:
        return action()
    except Exception as error:  # recorded, the scenario goes on without this step
        errors[name] = f"{type(error).__name__}: {error}"
        return None


def measure(scenario: Scenario, family: ScenarioFamily, *, dp: bool, overhead: bool = True,
            fallback_oracle: bool = True) -> dict:
    """Run ``scenario`` (DP on or off) and return its JSON row. ``overhead``: also train without
    history records first; ``fallback_oracle``: retrain by the bench when the project's oracle fails."""
    client = scenario.removed_client
    config = scenario.run_config(family, dp=dp)
    row: dict = {"scenario": scenario.to_dict(), "dp": "on" if dp else "off", "errors": {}}
    errors = row["errors"]
    with tempfile.TemporaryDirectory(prefix="fedvault-unlearning-bench-") as scratch:
        scratch = Path(scratch)
        if overhead:
            plain = _step(errors, "training without records",
                          lambda: _train(scenario.run_config(family, dp=dp, history=False), scratch / "plain"))
            row["train_seconds_without_records"] = None if plain is None else plain[1]
        trained = _step(errors, "training", lambda: _train(config, scratch / "run"))
        if trained is None:
            return row
        run_id, row["train_seconds"] = trained
        if overhead and row.get("train_seconds_without_records"):
            row["recording_overhead"] = row["train_seconds"] / row["train_seconds_without_records"] - 1.0
        history = _history(scratch / "run", run_id, scenario.clients)
        original = history.pop("final")
        row.update(history)
        oracles, sources = [], []
        for number in range(1, 3 if dp else 2):
            oracle = _step(errors, f"oracle {number}", lambda: _oracle(scratch / "run", run_id, client, family.workers))
            sources.append("project")
            if oracle is None and fallback_oracle:
                oracle = _step(errors, f"fallback oracle {number}",
                               lambda: _fallback_oracle(scratch / "run", config, client))
                sources[-1] = "bench fallback"
            if oracle is not None:
                oracles.append(oracle)
        row["oracle_source"] = sources
        row["retrain_seconds"] = [seconds for _, seconds in oracles]
        deleted = _step(errors, "deletion", lambda: _unlearn(scratch / "run", run_id, client))

    evaluator = ScenarioEvaluator(config, client, seed=scenario.seed)
    row["dominant_classes"] = evaluator.dominant
    models = {"original": original}
    if deleted is not None:
        models["unlearned"], report, row["deletion_cli_seconds"] = deleted
        row["deletion_seconds"] = report.get("seconds")
        row["records_opened"] = report.get("records_opened")
    for index, (parameters, _) in enumerate(oracles):
        models[f"oracle_{index + 1}"] = parameters
    metrics = {name: evaluator.evaluate(parameters) for name, parameters in models.items()}
    row["models"] = {name: m.__dict__ for name, m in metrics.items()}
    if oracles:
        oracle = oracles[0][0]
        for name in ("original", "unlearned"):
            if name in models:
                row[name] = {**gaps(metrics[name], metrics["oracle_1"]),
                             "distance": relative_distance(models[name], oracle, original)}
        if len(oracles) == 2:  # the retrainings' spread: the second oracle measured against the first
            row["oracle_spread"] = {**gaps(metrics["oracle_2"], metrics["oracle_1"]),
                                    "distance": relative_distance(models["oracle_2"], oracle, original)}
        if row.get("deletion_seconds"):
            row["speedup"] = float(np.mean(row["retrain_seconds"])) / row["deletion_seconds"]
    return row
