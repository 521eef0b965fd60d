"""sha256 of text and of canonical JSON: the one helper behind every content key and row id.

Artifact-store keys (``storage.artifacts.stage_key``), database row ids
(``storage.records.stable_id``) and the prompt hash in graph slugs all come from here, so a
change of how tracerflow hashes is a change of this module, which ``tests/test_hashing.py``
pins to values an existing store and database already hold.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> str:
    """One JSON text per value: sorted keys, no whitespace, so equal values hash equally.

    Values JSON does not know (a ``torch.dtype``, a ``Path``) are written as ``str(value)``:
    parameters such as ``dtype`` arrive as objects and should still be recorded, not refused.
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def sha256_text(text: str) -> str:
    """Hex sha256 of ``text``'s UTF-8 bytes."""
    return hashlib.sha256(text.encode()).hexdigest()


def sha256_json(value: Any) -> str:
    """Hex sha256 of ``value``'s canonical JSON: equal values, equal hashes."""
    return sha256_text(canonical_json(value))
