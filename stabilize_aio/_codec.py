"""Values that will be persisted, checked and made plain at the door (definitions, inputs, outputs, signals).

Persisted records and rows are encoded by the store (``store._base``) and the
outbox messages by ``_messages``. A value entering a workflow goes through
:func:`plain` first: it proves the value encodable (an unencodable one fails
with its stage named instead of inside a commit) and returns the value as the
store gives it back (lists for tuples, plain dicts), so what a run shows is the
same whether it is read from memory or from the database, in any process.
"""

from __future__ import annotations

from typing import TypeVar

import msgspec

from ._errors import EncodingError

_encoder = msgspec.msgpack.Encoder()
_decode = msgspec.msgpack.Decoder().decode
T = TypeVar("T")


def plain(value: T, *, what: str, stage: str | None = None) -> T:
    """``value`` as the store returns it; raise :class:`EncodingError` naming ``what`` if it cannot be encoded."""
    if not value and isinstance(value, dict):
        return value  # the common empty outputs: nothing to encode
    try:
        return _decode(_encoder.encode(value))  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        where = f"stage {stage!r}: " if stage is not None else ""
        raise EncodingError(f"{where}{what} cannot be encoded: {exc}", stage=stage) from exc
