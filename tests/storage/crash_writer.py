"""Writer process for test_crash_safety.py: commits rounds to one run until it is killed.

Usage: python crash_writer.py DATABASE RUN_ID. Prints ``ready N`` (N = the round it will write
first) and then ``committed N`` after each commit. Every round's content is a deterministic
function of its index (see ``round_for``), so the checker can tell a whole round from a torn one.
"""

import sys
from datetime import UTC, datetime

import numpy as np

from storage import (
    AggregateWrite,
    CheckpointWrite,
    LedgerEntryWrite,
    Repository,
    RoundWrite,
    SealedRecordWrite,
    checkpoint_due,
)

COHORT = (0, 1, 2, 3, 4)
SURVIVORS = (0, 1, 2, 3)
LENGTH = 2_000
CHECKPOINT_EVERY = 3


def lattice_sum(index: int) -> np.ndarray:
    return (np.arange(LENGTH, dtype=np.int64) % 23 - 11) * (index + 1)


def record_bytes(index: int, client: int) -> bytes:
    return bytes([index % 256, client]) * 1024


def round_for(index: int) -> RoundWrite:
    now = datetime.now(UTC)
    return RoundWrite(
        round_index=index,
        cohort=COHORT,
        survivors=SURVIVORS,
        started_at=now,
        finished_at=now,
        dropouts={"masked_input": (4,)},
        client_weights={c: 1.0 for c in SURVIVORS},
        parameters={"round": index},
        bytes_uploaded=12345,
        aggregates=(
            AggregateWrite(lattice_sum(index)),
            AggregateWrite(np.full(LENGTH, index, np.float32), kind="mean_update", name="mean"),
        ),
        checkpoint=CheckpointWrite({"w": np.full(LENGTH, index, np.float32)})
        if checkpoint_due(index, CHECKPOINT_EVERY)
        else None,
        sealed_records=tuple(SealedRecordWrite(c, record_bytes(index, c), {"parent": index - 1}) for c in SURVIVORS),
        ledger_entries=tuple(
            LedgerEntryWrite(c, index, "distributed", {"name": "SkellamEvent", "mu": 1.0}, 0.1 * (index + 1), 1e-5)
            for c in SURVIVORS
        ),
    )


def main() -> None:
    database, run_id = sys.argv[1], int(sys.argv[2])
    repository = Repository.open(database)
    index = repository.next_round_index(run_id)
    print(f"ready {index}", flush=True)
    while True:
        repository.commit_round(run_id, round_for(index))
        print(f"committed {index}", flush=True)
        index += 1


if __name__ == "__main__":
    main()
