"""JSON out: one encoder for every response body, event-stream payload and SSE chunk.

Made once because ``json.dumps`` with options builds a new encoder on every call, a few
microseconds that every response paid (the OpenAI face's SSE chunks once per delta).
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["dump_json"]

_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)


def dump_json(body: Any) -> bytes:
    """Compact UTF-8 JSON, non-ASCII kept as is."""
    return _ENCODER.encode(body).encode("utf-8")
