from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from sagegate import keys

values = st.one_of(st.integers(), st.floats(allow_nan=False), st.text(max_size=8), st.booleans())


@given(st.dictionaries(st.text(min_size=1, max_size=8), values, min_size=1, max_size=8))
def test_the_same_features_in_any_order_make_the_same_key(features: dict[str, object]) -> None:
    shuffled = dict(reversed(list(features.items())))
    assert keys.prediction_key("fraud", "2", features) == keys.prediction_key("fraud", "2", shuffled)


def test_keys_separate_models_versions_and_values() -> None:
    base = keys.prediction_key("fraud", "1", {"a": 1})
    assert base.startswith("sagegate:pred:fraud:1:")
    assert (
        len(
            {
                base,
                keys.prediction_key("fraud", "2", {"a": 1}),
                keys.prediction_key("churn", "1", {"a": 1}),
                keys.prediction_key("fraud", "1", {"a": 2}),
            }
        )
        == 4
    )
    assert keys.lock_key(base) == base + ":lock"
    assert base.endswith("{" + keys.features_hash({"a": 1}) + "}")  # the hash tag: key and lock in one slot
    assert keys.hash_of(base) == keys.features_hash({"a": 1})
    assert keys.feature_key("user_id", "u1") == "sagegate:feat:user_id:u1"
