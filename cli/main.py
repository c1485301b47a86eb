"""The ``fedvault`` command group.

Sub-commands are imported only when invoked, so ``fedvault --help`` stays fast (no torch import).
Every fedvault error becomes one readable line on stderr and a non-zero exit code.
"""

from __future__ import annotations

import importlib
import sys
from importlib.metadata import PackageNotFoundError, version

import click

# name -> "module:attribute". Each module holds one click command or group.
COMMANDS: dict[str, str] = {
    "demo": "cli.demo:demo",
    "run": "cli.run:run",
    "db": "cli.db:db",
    "audit": "cli.audit:audit",
    "audit-run": "cli.audit_run:audit_run",
    "history": "cli.history:history",
    "serve": "cli.serve:serve",
    "client": "cli.client:client",
    "authority": "cli.authority:authority",
    "unlearn": "cli.unlearn:unlearn",
}

# Each package's error base. The CLI prints their message as one line and exits 2.
_ERROR_BASES = (
    "secagg.errors:SecAggError",
    "privacy.errors:PrivacyError",
    "storage.errors:StorageError",
    "unlearning.errors:UnlearningError",
    "federation.errors:FederationError",
)


def _load(spec: str):
    module_name, attribute = spec.split(":")
    return getattr(importlib.import_module(module_name), attribute)


def fedvault_error_types() -> tuple[type[BaseException], ...]:
    return tuple(_load(spec) for spec in _ERROR_BASES)


def _package_version() -> str:
    try:
        return version("fedvault")
    except PackageNotFoundError:  # running from a source tree that is not installed
        return "0+unknown"


class LazyGroup(click.Group):
    """A click group whose sub-commands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        spec = COMMANDS.get(cmd_name)
        return _load(spec) if spec else None

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except fedvault_error_types() as error:
            click.echo(f"fedvault: error: {_one_line(error)}", err=True)
            sys.exit(2)


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(_package_version(), "--version", "-V", prog_name="fedvault")
def fedvault() -> None:
    """fedvault: federated learning with lattice-coded secure aggregation, local differential
    privacy with an auditable budget ledger, and verified unlearning of a client's contribution.

    Start with `fedvault run` (a complete private training run on bundled data, about a minute
    on two cores); `fedvault COMMAND --help` is the manual of each command.
    """


if __name__ == "__main__":  # pragma: no cover
    fedvault()
