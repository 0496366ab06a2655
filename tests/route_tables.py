"""The route table's DynamoDB schema for tests under moto: the key infra/constructs/data.py gives
the table in AWS (model, kind), written once for every test that needs the table."""

from __future__ import annotations

from typing import Any


def create_route_table(client: Any, name: str) -> None:
    client.create_table(
        TableName=name,
        KeySchema=[{"AttributeName": "model", "KeyType": "HASH"}, {"AttributeName": "kind", "KeyType": "RANGE"}],
        AttributeDefinitions=[
            {"AttributeName": "model", "AttributeType": "S"},
            {"AttributeName": "kind", "AttributeType": "S"},
        ],
        BillingMode="PAY_PER_REQUEST",
    )
