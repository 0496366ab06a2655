"""Rotation of the cache's AUTH token: Secrets Manager's four steps for an ElastiCache (Redis OSS /
Valkey) replication group with in-transit encryption.

ElastiCache takes a new token with `AuthTokenUpdateStrategy=ROTATE` and then accepts the old and the
new one, so a gateway that read the old token at cold start keeps working; ElastiCache keeps two, so
the rotation after next is what drops a token. That is why this never uses `SET` (which would drop
the old token at once) and why `set_secret` first asks Redis whether the pending token already works:
ROTATE-ing the same token twice would leave only that token and cut every gateway off.

    create_secret  a new random token as the AWSPENDING version (once per rotation)
    set_secret     ModifyReplicationGroup(AuthToken=pending, ROTATE) unless Redis already takes it
    test_secret    wait for the group to be available, then AUTH + PING with the pending token
    finish_secret  AWSCURRENT moves to the pending version
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["CacheTokenRotation", "RotationError"]

STEPS = ("createSecret", "setSecret", "testSecret", "finishSecret")


class RotationError(Exception):
    pass


class CacheTokenRotation:
    def __init__(
        self,
        *,
        secrets: Any,
        elasticache: Any,
        replication_group: str,
        tls: bool = True,
        poll_seconds: float = 10,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._secrets = secrets
        self._elasticache = elasticache
        self.replication_group = replication_group
        self.tls = tls
        self.poll_seconds = poll_seconds
        self._clock = clock

    def run(self, step: str, secret_id: str, token: str, *, deadline_s: float) -> None:
        """One step of a rotation, as Secrets Manager invokes it; raises what must fail the rotation."""
        if step not in STEPS:
            raise RotationError(f"unknown rotation step {step!r} (expected one of {', '.join(STEPS)})")
        described = self._secrets.describe_secret(SecretId=secret_id)
        if not described.get("RotationEnabled"):
            raise RotationError(f"secret {secret_id} does not have rotation enabled")
        stages = described.get("VersionIdsToStages", {})
        if token not in stages:
            raise RotationError(f"version {token} is not a version of secret {secret_id}")
        if "AWSCURRENT" in stages[token]:
            return  # this rotation is already finished
        if "AWSPENDING" not in stages[token]:
            raise RotationError(f"version {token} of secret {secret_id} is not AWSPENDING")
        if step == "createSecret":
            self.create_secret(secret_id, token)
        elif step == "setSecret":
            self.set_secret(secret_id, token)
        elif step == "testSecret":
            self.test_secret(secret_id, token, deadline_s=deadline_s)
        else:
            self.finish_secret(secret_id, token, stages)

    def create_secret(self, secret_id: str, token: str) -> None:
        self._secrets.get_secret_value(SecretId=secret_id, VersionStage="AWSCURRENT")
        try:
            self._secrets.get_secret_value(SecretId=secret_id, VersionId=token, VersionStage="AWSPENDING")
            return  # made by an earlier attempt of this rotation
        except self._secrets.exceptions.ResourceNotFoundException:
            pass
        # ElastiCache AUTH tokens: 16-128 printable characters, and no punctuation keeps URLs simple.
        new = self._secrets.get_random_password(PasswordLength=64, ExcludePunctuation=True)["RandomPassword"]
        self._secrets.put_secret_value(
            SecretId=secret_id, ClientRequestToken=token, SecretString=new, VersionStages=["AWSPENDING"]
        )

    def set_secret(self, secret_id: str, token: str) -> None:
        pending = self._pending(secret_id, token)
        group = self._group()
        if group["Status"] == "available" and self._authenticates(group, pending):
            return  # an earlier attempt set it: ROTATE-ing it again would drop the old token
        if group["Status"] != "available":
            raise RotationError(
                f"replication group {self.replication_group} is {group['Status']}, not available; rotate later"
            )
        self._elasticache.modify_replication_group(
            ReplicationGroupId=self.replication_group,
            AuthToken=pending,
            AuthTokenUpdateStrategy="ROTATE",
            ApplyImmediately=True,
        )

    def test_secret(self, secret_id: str, token: str, *, deadline_s: float) -> None:
        pending = self._pending(secret_id, token)
        until = self._clock() + deadline_s
        group = self._group()
        while group["Status"] != "available":
            if self._clock() + self.poll_seconds > until:
                raise RotationError(f"replication group {self.replication_group} is still {group['Status']}")
            time.sleep(self.poll_seconds)
            group = self._group()
        if not self._authenticates(group, pending):
            raise RotationError(f"the pending token does not authenticate to {self.replication_group}")

    def finish_secret(self, secret_id: str, token: str, stages: dict[str, list[str]]) -> None:
        current = next((version for version, names in stages.items() if "AWSCURRENT" in names), None)
        self._secrets.update_secret_version_stage(
            SecretId=secret_id, VersionStage="AWSCURRENT", MoveToVersionId=token, RemoveFromVersionId=current
        )

    # -- helpers -------------------------------------------------------------------------------

    def _pending(self, secret_id: str, token: str) -> str:
        value: str = self._secrets.get_secret_value(SecretId=secret_id, VersionId=token, VersionStage="AWSPENDING")[
            "SecretString"
        ]
        return value

    def _group(self) -> dict[str, Any]:
        groups = self._elasticache.describe_replication_groups(ReplicationGroupId=self.replication_group)
        group: dict[str, Any] = groups["ReplicationGroups"][0]
        return group

    def _authenticates(self, group: dict[str, Any], token: str) -> bool:
        import redis
        from redis.backoff import NoBackoff
        from redis.retry import Retry

        endpoint = group["NodeGroups"][0]["PrimaryEndpoint"]
        client = redis.Redis(
            host=endpoint["Address"],
            port=int(endpoint["Port"]),
            password=token,
            ssl=self.tls,
            socket_timeout=5,
            socket_connect_timeout=5,
            retry=Retry(NoBackoff(), 0),  # a refused token is an answer, not a fault to retry for seconds
        )
        try:
            return bool(client.ping())
        except redis.AuthenticationError:
            return False
        except redis.ResponseError as exc:  # WRONGPASS arrives as a plain error on some servers
            if "WRONGPASS" in str(exc) or "invalid password" in str(exc).lower():
                return False
            raise
        finally:
            client.close()
