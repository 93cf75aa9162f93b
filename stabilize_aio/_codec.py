"""The check that a value can be persisted, run at the door (definitions, inputs, outputs).

Persisted records and rows are encoded by the store (``store._base``) and the
outbox messages by ``_messages``; this encoder only proves encodability early,
so an unencodable value fails with its stage named instead of inside a commit.
"""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import EncodingError

_encoder = msgspec.msgpack.Encoder()


def check_encodable(value: Any, *, what: str, stage: str | None = None) -> None:
    """Raise :class:`EncodingError` naming ``what`` if msgspec cannot encode ``value``."""
    try:
        _encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        where = f"stage {stage!r}: " if stage is not None else ""
        raise EncodingError(f"{where}{what} cannot be encoded: {exc}", stage=stage) from exc
