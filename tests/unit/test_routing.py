from __future__ import annotations

import random
from collections import Counter

import pytest
from pydantic import ValidationError

from sagegate.routing import BUCKETS, NoVariant, Route, SplitMode, bucket, choose_variant

USERS = [f"user-{i}" for i in range(10_000)]


def route(*weights: float, split: SplitMode = SplitMode.USER, shadow: str | None = None) -> Route:
    variants = [{"name": f"v{i + 1}", "model_version": str(i + 1), "weight": w} for i, w in enumerate(weights)]
    return Route.model_validate(
        {"model": "fraud", "endpoint": "fraud-prod", "variants": variants, "split": split, "shadow": shadow}
    )


def assignment(r: Route) -> dict[str, str]:
    return {u: choose_variant(r, user_id=u).name for u in USERS}


def test_a_user_stays_on_one_variant() -> None:
    r = route(50, 50)
    assert all(choose_variant(r, user_id=u).name == choose_variant(r, user_id=u).name for u in USERS[:500])
    assert 0 <= bucket("fraud", "user-1") < BUCKETS


def test_an_80_20_split_holds_within_statistical_tolerance() -> None:
    shares = Counter(assignment(route(80, 20)).values())
    # Binomial(10000, 0.2): sd = 40, so 5 sd is 200 users.
    assert abs(shares["v2"] - 2000) < 200
    assert shares["v1"] + shares["v2"] == 10_000


def test_a_5_to_20_ramp_moves_about_15_percent_of_users_and_no_others() -> None:
    before, after = assignment(route(95, 5)), assignment(route(80, 20))
    moved = [u for u in USERS if before[u] != after[u]]
    assert abs(len(moved) - 1500) < 200
    assert all(before[u] == "v1" and after[u] == "v2" for u in moved)  # nobody leaves v2


def test_a_version_pin_wins_over_the_split() -> None:
    r = route(100, 0)
    assert choose_variant(r, user_id="anyone", version="2").name == "v2"
    with pytest.raises(NoVariant, match="version '9'"):
        choose_variant(r, version="9")


def test_request_mode_is_random_and_shadow_takes_no_traffic() -> None:
    r = route(50, 50, 100, split=SplitMode.REQUEST, shadow="v3")
    rng = random.Random(7)
    shares = Counter(choose_variant(r, user_id="same-user", rng=rng).name for _ in range(10_000))
    assert set(shares) == {"v1", "v2"}
    assert abs(shares["v1"] - 5000) < 250
    with pytest.raises(NoVariant):
        choose_variant(r, version="3")


def test_zero_weight_variants_get_nobody() -> None:
    assert set(assignment(route(0, 100)).values()) == {"v2"}


@pytest.mark.parametrize(
    ("variants", "extra", "message"),
    [
        ([("a", 0)], {}, "at least one variant"),
        ([("a", 1), ("a", 1)], {}, "unique"),
        ([("a", 1)], {"shadow": "b"}, "shadow variant 'b'"),
        ([("a b", 1)], {}, "should match pattern"),
    ],
)
def test_bad_routes_are_refused(variants: list[tuple[str, float]], extra: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Route.model_validate(
            {
                "model": "m",
                "endpoint": "e",
                **extra,
                "variants": [{"name": n, "model_version": "1", "weight": w} for n, w in variants],
            }
        )
