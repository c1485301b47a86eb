"""Retention policy helpers (pure): when to checkpoint. Deleting old data is done by the
repository's transactional ``drop_old_checkpoints`` and ``shred_client_records``."""

from __future__ import annotations

from storage.errors import StorageValueError
from storage.validation import check_int


def checkpoint_due(round_index: int, every: int, *, last_round: int | None = None) -> bool:
    """Whether the model after ``round_index`` should be checkpointed when checkpointing every
    ``every`` rounds (rounds every-1, 2*every-1, ...), and always after the run's ``last_round``.

    ``every`` = 0 disables periodic checkpoints (the last round is still kept).
    """
    round_index = check_int(round_index, "round_index")
    every = check_int(every, "every")
    if last_round is not None and check_int(last_round, "last_round") < round_index:
        raise StorageValueError(f"round {round_index} is after the last round {last_round}")
    if last_round is not None and round_index == last_round:
        return True
    return every > 0 and (round_index + 1) % every == 0
