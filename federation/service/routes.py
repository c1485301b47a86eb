"""URL segments shared by the server (``federation.service.app``) and the client
(``federation.http_client``), defined once; importing this pulls in no web framework."""

from __future__ import annotations

from secagg.stages import ADVERTISE_KEYS, CONSISTENCY, MASKED_INPUT, SHARE_KEYS, UNMASK

#: URL segment of each SecAgg+ stage: POST /v1/rounds/{round_index}/{segment}.
STAGE_PATHS = {ADVERTISE_KEYS: "advertise-keys", SHARE_KEYS: "share-keys", MASKED_INPUT: "masked-input",
               CONSISTENCY: "consistency", UNMASK: "unmask"}


#: Sealed history records: POST /v1/rounds/{round_index}/history-record.
RECORD_SEGMENT = "history-record"
RECORD_PATH = "/v1/rounds/{round_index}/" + RECORD_SEGMENT


def record_path(round_index: int) -> str:
    return RECORD_PATH.format(round_index=round_index)


def stage_path(round_index: int, stage: str) -> str:
    """The endpoint a client posts its ``stage`` message of round ``round_index`` to."""
    return f"/v1/rounds/{round_index}/{STAGE_PATHS[stage]}"
