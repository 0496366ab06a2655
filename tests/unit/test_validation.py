from __future__ import annotations

from sagegate.local.data import fraud_features, generate_transactions
from sagegate.validation import FieldError, RecordValidator


def validator() -> RecordValidator:
    return RecordValidator(fraud_features(generate_transactions(200, seed=1)))


def test_a_good_record_comes_back_with_defaults_filled() -> None:
    clean, errors = validator().check({"amount": 12.5, "hour": 3, "merchant_category": "gaming"})
    assert errors == []
    assert clean == {
        "amount": 12.5,
        "hour": 3,
        "merchant_category": "gaming",
        "channel": "pos",
        "transactions_24h": 0,
        "distance_from_home_km": 0.0,
        "is_foreign": False,
        "card_present": True,
    }
    # account_age_days has no default but an impute step: the server fills it, so it is left out.
    assert "account_age_days" not in clean


def test_every_bad_field_is_named_at_once() -> None:
    clean, errors = validator().check(
        {"hour": 30, "merchant_category": 7, "channel": "fax", "colour": "red", "is_foreign": "yes"}
    )
    assert set(errors) == {
        FieldError("colour", "is not a feature of this model"),
        FieldError("amount", "is required"),
        FieldError("hour", "30 is above the maximum 23"),
        FieldError("merchant_category", "expected a string, got int"),
        FieldError("channel", "'fax' is not one of the categories (atm, mobile, pos, web)"),
        FieldError("is_foreign", "expected a boolean, got str"),
    }
    assert "hour" not in clean


def test_text_booleans_are_true_false_0_or_1_in_any_case_and_nothing_else() -> None:
    import pytest

    from sagegate.manifest import Feature
    from sagegate.validation import InvalidValue, text_parser

    parse = text_parser(Feature(name="is_foreign", type="bool"))
    assert [parse(t) for t in ("true", "True", "TRUE", "1", "false", "FALSE", "0")] == [1.0] * 4 + [0.0] * 3
    for word in ("yes", "no", "t", "f", "y", "on"):
        with pytest.raises(InvalidValue, match=r"expected a boolean, got "):
            parse(word)
