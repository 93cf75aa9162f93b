"""One msgpack encoder/decoder pair for everything we persist, built once."""

from __future__ import annotations

from typing import Any

import msgspec

from ._errors import EncodingError

encoder = msgspec.msgpack.Encoder()
_any_decoder = msgspec.msgpack.Decoder()


def encode(value: Any) -> bytes:
    """Encode ``value`` to msgpack."""
    return encoder.encode(value)


def decode_any(data: bytes) -> Any:
    """Decode msgpack into plain Python values."""
    return _any_decoder.decode(data)


def check_encodable(value: Any, *, what: str, stage: str | None = None) -> None:
    """Raise :class:`EncodingError` naming ``what`` if msgspec cannot encode ``value``."""
    try:
        encoder.encode(value)
    except (TypeError, ValueError, OverflowError) as exc:
        where = f"stage {stage!r}: " if stage is not None else ""
        raise EncodingError(f"{where}{what} cannot be encoded: {exc}", stage=stage) from exc
