"""Cache and feature-store keys: one recipe, in one place.

A key is a prefix naming what it belongs to plus, for predictions, the sha256 of canonical JSON
(sorted keys, no whitespace), so the same features in any order make the same key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "PREFIX",
    "canonical_json",
    "feature_key",
    "features_hash",
    "hash_of",
    "lock_key",
    "logged_hash",
    "prediction_key",
]

PREFIX = "sagegate"


def canonical_json(value: Any) -> bytes:
    try:
        return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # integers beyond 64 bits: orjson refuses them, the json module does not
        return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def features_hash(features: Mapping[str, Any]) -> str:
    return hashlib.sha256(canonical_json(features)).hexdigest()


def prediction_key(model: str, version: str, features: Mapping[str, Any], *, explained: bool = False) -> str:
    """Where the prediction of `model` v`version` for these features is cached (`explained`: with its
    explanation). The hash is the key's hash tag (`{...}`): a clustered Redis keeps the key and its
    lock in one slot, so one script can touch both."""
    kind = "explained" if explained else "pred"
    return f"{PREFIX}:{kind}:{model}:{version}:{{{features_hash(features)}}}"


def lock_key(key: str) -> str:
    """The single-flight lock of a cache key: held by the one request computing its value."""
    return f"{key}:lock"


def hash_of(key: str) -> str:
    """The features hash of a prediction key."""
    return key.rsplit(":", 1)[-1].strip("{}")


def logged_hash(model: str, feature: str, value: Any) -> str:
    """What the prediction log holds of a `sensitive: hash` feature's value: equal values stay equal
    (groups, drift of categories), the value is not written. A value from a small set can still be
    guessed by hashing each candidate: mark those `drop`."""
    return hashlib.sha256(canonical_json([model, feature, value])).hexdigest()[:16]


def feature_key(entity: str, entity_id: str) -> str:
    """The Redis hash holding an entity's online features (e.g. entity "user_id", id "u42")."""
    return f"{PREFIX}:feat:{entity}:{entity_id}"
