"""A generated, realistic card-transactions data set for fraud detection (about 2% fraud).

Used by the quickstart, the demo, the tests and the benchmarks: nothing is downloaded. Fraud
depends non-linearly on the features (night-time online gaming from abroad, bursts of
transactions, new accounts), so a tree ensemble can beat a linear model, as in real data.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sagegate.manifest import Feature

__all__ = ["CATEGORIES", "CHANNELS", "Transactions", "fraud_features", "generate_transactions", "shifted_records"]

CATEGORIES = ["grocery", "restaurants", "fuel", "electronics", "travel", "gaming", "online_services"]
CHANNELS = ["pos", "web", "mobile", "atm"]
_CATEGORY_RISK = np.array([-0.6, -0.4, -0.3, 0.5, 0.4, 0.9, 0.6])
_CHANNEL_RISK = np.array([-0.5, 0.5, 0.3, 0.2])


@dataclass(frozen=True)
class Transactions:
    records: list[dict[str, Any]]
    label: np.ndarray  # 1 = fraud

    def __len__(self) -> int:
        return len(self.records)


def generate_transactions(n: int, seed: int = 0, fraud_rate: float = 0.02) -> Transactions:
    rng = np.random.default_rng(seed)
    amount = np.round(rng.lognormal(mean=3.6, sigma=1.1, size=n), 2).clip(0.5, 25_000)
    hour = rng.integers(0, 24, size=n)
    category = rng.choice(len(CATEGORIES), size=n, p=[0.28, 0.18, 0.14, 0.12, 0.08, 0.08, 0.12])
    channel = rng.choice(len(CHANNELS), size=n, p=[0.5, 0.25, 0.2, 0.05])
    account_age = rng.gamma(shape=2.0, scale=400.0, size=n).astype(int).clip(0, 7000)
    tx_24h = rng.poisson(2.0, size=n).clip(0, 60)
    distance = np.round(rng.lognormal(mean=1.5, sigma=1.2, size=n), 1).clip(0, 15_000)
    foreign = rng.random(n) < 0.07
    card_present = (channel == 0) | ((channel == 3) & (rng.random(n) < 0.9))
    night = (hour <= 5) | (hour >= 23)

    score = (
        0.55 * (np.log1p(amount) - 3.6)
        + _CATEGORY_RISK[category]
        + _CHANNEL_RISK[channel]
        + 1.1 * night * (category >= 5)  # night-time gaming and online services
        + 1.3 * foreign * ~card_present
        + 0.35 * np.maximum(tx_24h - 4, 0)
        - 0.8 * np.log1p(account_age) / np.log1p(2000)
        + 0.4 * np.log1p(distance) / 4
        + rng.normal(0, 0.6, size=n)
    )
    # Calibrate the intercept so the expected fraud rate is as asked.
    threshold = np.quantile(score, 1 - fraud_rate)
    label = (score > threshold).astype(np.int64)

    records = [
        {
            "amount": float(a),
            "hour": int(h),
            "merchant_category": CATEGORIES[c],
            "channel": CHANNELS[ch],
            "account_age_days": int(age),
            "transactions_24h": int(t),
            "distance_from_home_km": float(d),
            "is_foreign": bool(f),
            "card_present": bool(cp),
        }
        for a, h, c, ch, age, t, d, f, cp in zip(
            amount.tolist(),
            hour.tolist(),
            category.tolist(),
            channel.tolist(),
            account_age.tolist(),
            tx_24h.tolist(),
            distance.tolist(),
            foreign.tolist(),
            card_present.tolist(),
            strict=True,
        )
    ]
    return Transactions(records, label)


# Where drifted traffic buys: electronics and gaming, far more than in training.
SHIFTED_MIX = [0.1, 0.05, 0.05, 0.35, 0.05, 0.3, 0.1]


def shifted_records(data: Transactions, seed: int = 0) -> list[dict[str, Any]]:
    """The same transactions with amounts x3 and a new merchant mix: the drift the demo shows."""
    rng = np.random.default_rng(seed)
    mix = rng.choice(len(CATEGORIES), size=len(data), p=SHIFTED_MIX)
    return [
        {**r, "amount": round(r["amount"] * 3, 2), "merchant_category": CATEGORIES[m]}
        for r, m in zip(data.records, mix.tolist(), strict=True)
    ]


def fraud_features(data: Transactions) -> list[Feature]:
    """The manifest's input features, with standardisation fitted on `data`."""

    def stats(name: str, log: bool = False) -> dict[str, float]:
        values = np.array([r[name] for r in data.records], dtype=np.float64)
        if log:
            values = np.log1p(values)
        return {"mean": float(values.mean()), "std": float(values.std() or 1.0)}

    spec: list[dict[str, Any]] = [
        {
            "name": "amount",
            "type": "float",
            "minimum": 0,
            "maximum": 1_000_000,
            "transforms": [{"kind": "log1p"}, {"kind": "standardize", **stats("amount", log=True)}],
        },
        {
            "name": "hour",
            "type": "int",
            "minimum": 0,
            "maximum": 23,
            "transforms": [{"kind": "min_max", "min": 0, "max": 23}],
        },
        {
            "name": "merchant_category",
            "type": "categorical",
            "categories": CATEGORIES,
            "transforms": [{"kind": "one_hot"}],
        },
        {
            "name": "channel",
            "type": "categorical",
            "categories": CHANNELS,
            "required": False,
            "default": "pos",
            "transforms": [{"kind": "one_hot"}],
        },
        {
            "name": "account_age_days",
            "type": "int",
            "minimum": 0,
            "required": False,
            "transforms": [
                {"kind": "impute", "value": 365},
                {"kind": "log1p"},
                {"kind": "standardize", **stats("account_age_days", log=True)},
            ],
        },
        {
            "name": "transactions_24h",
            "type": "int",
            "minimum": 0,
            "maximum": 10_000,
            "required": False,
            "default": 0,
            "transforms": [{"kind": "standardize", **stats("transactions_24h")}],
        },
        {
            "name": "distance_from_home_km",
            "type": "float",
            "minimum": 0,
            "required": False,
            "default": 0.0,
            "transforms": [{"kind": "log1p"}, {"kind": "standardize", **stats("distance_from_home_km", log=True)}],
        },
        # Protected: whether the model treats cardholders abroad fairly is checked (sagegate monitor).
        {"name": "is_foreign", "type": "bool", "required": False, "default": False, "protected": True},
        {"name": "card_present", "type": "bool", "required": False, "default": True},
    ]
    return [Feature.model_validate(f) for f in spec]
