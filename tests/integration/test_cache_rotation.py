"""Rotation of the cache's AUTH token, step by step as Secrets Manager drives it, against a real
redis-server. Secrets Manager is moto (versions and stages behave as in AWS); ElastiCache's API is a
botocore Stubber, because moto ignores AuthToken: what the test cannot prove is ElastiCache itself
taking the token. It stands in for it by giving Redis's default user both passwords, which is what
ROTATE leaves behind (ElastiCache accepts the old and the new token)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
import redis
from botocore.stub import Stubber
from moto import mock_aws

from sagegate.cache_auth import CacheTokenRotation, RotationError

GROUP = "sagegate-dev-cache"
OLD = "o" * 64


@pytest.fixture
def redis_with_token(redis_server: tuple[str, subprocess.Popen[bytes]]) -> Iterator[redis.Redis]:
    url, _ = redis_server
    admin = redis.Redis.from_url(url)
    admin.execute_command("ACL", "SETUSER", "default", "on", "resetpass", f">{OLD}")
    admin = redis.Redis.from_url(url, password=OLD)
    yield admin
    admin.close()


@pytest.fixture
def secrets() -> Iterator[Any]:
    with mock_aws():
        client = boto3.client("secretsmanager", region_name="eu-west-1")
        client.create_secret(Name="cache-auth", SecretString=OLD)
        yield client


def _start_rotation(secrets: Any) -> str:
    """RotateSecret: rotation on, an AWSPENDING version without a value, then the function is called.
    moto cannot call a Lambda here (it needs Docker), so it stops there; the test plays the part of
    Secrets Manager from then on, calling the steps in order."""
    with pytest.raises(secrets.exceptions.ResourceNotFoundException):
        secrets.rotate_secret(
            SecretId="cache-auth",
            RotationLambdaARN="arn:aws:lambda:eu-west-1:123456789012:function:sagegate-dev-cache-rotation",
            RotationRules={"AutomaticallyAfterDays": 30},
        )
    stages = secrets.describe_secret(SecretId="cache-auth")["VersionIdsToStages"]
    return next(v for v, names in stages.items() if names == ["AWSPENDING"])


def _describes(stubber: Stubber, port: int, *statuses: str) -> None:
    """ElastiCache's answers to DescribeReplicationGroups, in order: the group on this port."""
    endpoint = {"Address": "127.0.0.1", "Port": port}
    for status in statuses:
        group = {"ReplicationGroupId": GROUP, "Status": status, "NodeGroups": [{"PrimaryEndpoint": endpoint}]}
        stubber.add_response(
            "describe_replication_groups", {"ReplicationGroups": [group]}, {"ReplicationGroupId": GROUP}
        )


def _rotation(secrets: Any) -> tuple[CacheTokenRotation, Stubber]:
    """A call the Stubber was not given (or with other parameters) fails the test."""
    elasticache = boto3.client("elasticache", region_name="eu-west-1")
    stubber = Stubber(elasticache)
    stubber.activate()
    rotation = CacheTokenRotation(
        secrets=secrets, elasticache=elasticache, replication_group=GROUP, tls=False, poll_seconds=0.01
    )
    return rotation, stubber


def _port(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs["port"])


def _pending(secrets: Any, token: str) -> str:
    value: str = secrets.get_secret_value(SecretId="cache-auth", VersionId=token, VersionStage="AWSPENDING")[
        "SecretString"
    ]
    return value


def test_a_rotation_rotates_keeps_the_old_token_working_and_makes_the_new_one_current(
    redis_with_token: redis.Redis, secrets: Any
) -> None:
    rotation, stubber = _rotation(secrets)
    token = _start_rotation(secrets)
    port = _port(redis_with_token)

    rotation.run("createSecret", "cache-auth", token, deadline_s=30)
    new = _pending(secrets, token)
    assert new != OLD and len(new) == 64 and new.isalnum()

    _describes(stubber, port, "available")
    stubber.add_response(
        "modify_replication_group",
        {"ReplicationGroup": {"ReplicationGroupId": GROUP}},
        {"ReplicationGroupId": GROUP, "AuthToken": new, "AuthTokenUpdateStrategy": "ROTATE", "ApplyImmediately": True},
    )
    rotation.run("setSecret", "cache-auth", token, deadline_s=30)
    redis_with_token.execute_command("ACL", "SETUSER", "default", f">{new}")  # ElastiCache applying ROTATE

    _describes(stubber, port, "modifying", "available")
    rotation.run("testSecret", "cache-auth", token, deadline_s=30)
    rotation.run("finishSecret", "cache-auth", token, deadline_s=30)
    stubber.assert_no_pending_responses()

    assert secrets.get_secret_value(SecretId="cache-auth", VersionStage="AWSCURRENT")["SecretString"] == new
    for password in (OLD, new):  # a gateway that read the old token at cold start still gets in
        assert redis.Redis(port=port, password=password).ping()


def test_set_secret_again_does_not_rotate_a_token_redis_already_takes(
    redis_with_token: redis.Redis, secrets: Any
) -> None:
    rotation, stubber = _rotation(secrets)
    token = _start_rotation(secrets)
    rotation.run("createSecret", "cache-auth", token, deadline_s=30)
    rotation.run("createSecret", "cache-auth", token, deadline_s=30)  # a retried step makes no second token
    new = _pending(secrets, token)
    redis_with_token.execute_command("ACL", "SETUSER", "default", f">{new}")  # set by an earlier attempt

    _describes(stubber, _port(redis_with_token), "available")
    # No ModifyReplicationGroup is stubbed: ROTATE-ing the same token twice would leave ElastiCache
    # with only that one, and the call would fail this test.
    rotation.run("setSecret", "cache-auth", token, deadline_s=30)
    stubber.assert_no_pending_responses()


def test_a_token_the_cache_does_not_take_fails_the_rotation_and_the_old_one_stays_current(
    redis_with_token: redis.Redis, secrets: Any
) -> None:
    rotation, stubber = _rotation(secrets)
    token = _start_rotation(secrets)
    rotation.run("createSecret", "cache-auth", token, deadline_s=30)
    _describes(stubber, _port(redis_with_token), "available")
    with pytest.raises(RotationError, match="does not authenticate"):
        rotation.run("testSecret", "cache-auth", token, deadline_s=30)
    assert secrets.get_secret_value(SecretId="cache-auth", VersionStage="AWSCURRENT")["SecretString"] == OLD


def test_a_group_that_stays_busy_fails_the_test_step_within_its_deadline(
    redis_with_token: redis.Redis, secrets: Any
) -> None:
    rotation, stubber = _rotation(secrets)
    token = _start_rotation(secrets)
    rotation.run("createSecret", "cache-auth", token, deadline_s=30)
    _describes(stubber, _port(redis_with_token), "modifying", "modifying", "modifying")
    with pytest.raises(RotationError, match="still modifying"):
        rotation.run("testSecret", "cache-auth", token, deadline_s=0.025)


def test_steps_refuse_what_is_not_a_pending_version(secrets: Any) -> None:
    rotation, _ = _rotation(secrets)
    with pytest.raises(RotationError, match="does not have rotation enabled"):
        rotation.run("createSecret", "cache-auth", "x" * 32, deadline_s=30)
    token = _start_rotation(secrets)
    with pytest.raises(RotationError, match="is not a version"):
        rotation.run("createSecret", "cache-auth", "y" * 32, deadline_s=30)
    with pytest.raises(RotationError, match="unknown rotation step"):
        rotation.run("dropSecret", "cache-auth", token, deadline_s=30)
