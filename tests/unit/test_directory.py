"""The in-memory key directory (tokenmill.access.directory) and the grant rules of
tokenmill.access.keys: pure, no I/O."""

from __future__ import annotations

import dataclasses

import pytest

from tokenmill.access.directory import KeyDirectory
from tokenmill.access.keys import (
    KEY_PREFIX,
    Grant,
    check_grant,
    check_model,
    hash_secret,
    may_use_model,
    new_id,
    new_secret,
    unknown_model,
)
from tokenmill.errors import AuthenticationFailed, NotFound, PermissionDenied
from tokenmill.store.accounts import AccountRow, KeyRow

NOW_MS = 1_800_000_000_000


def account(account_id: str = "acct_1", status: str = "active") -> AccountRow:
    return AccountRow(account_id, account_id + "-name", status, NOW_MS, None)


def key(
    key_id: str = "key_1",
    account_id: str = "acct_1",
    *,
    models: tuple[str, ...] | None = None,
    expires_at_ms: int | None = None,
    revoked_at_ms: int | None = None,
) -> KeyRow:
    return KeyRow(
        id=key_id,
        account_id=account_id,
        name="default",
        key_hash=hash_secret("secret-" + key_id),
        key_prefix="tm-" + key_id[:7],
        models=models,
        created_at_ms=NOW_MS,
        expires_at_ms=expires_at_ms,
        revoked_at_ms=revoked_at_ms,
    )


def grant(directory: KeyDirectory, row: KeyRow) -> Grant | None:
    return directory.lookup(row.key_hash)


def grant_of(**fields: object) -> Grant:
    values: dict[str, object] = {
        "key_id": "key_1",
        "account_id": "acct_1",
        "models": None,
        "expires_at_ms": None,
        "account_active": True,
    }
    values.update(fields)
    return Grant(**values)  # type: ignore[arg-type]


class TestKeyDirectory:
    def test_a_live_key_of_an_active_account_grants_what_its_row_says(self) -> None:
        """The grant carries the key's id, account, allow-list and expiry, and is active."""
        directory = KeyDirectory()
        row = key(models=("sim-chat", "sim-embed"), expires_at_ms=NOW_MS + 1000)
        directory.load([account()], [row], seq=7)
        assert grant(directory, row) == Grant(
            key_id="key_1",
            account_id="acct_1",
            models=frozenset({"sim-chat", "sim-embed"}),
            expires_at_ms=NOW_MS + 1000,
            account_active=True,
        )
        assert len(directory) == 1
        assert directory.seq == 7

    def test_an_unknown_hash_finds_nothing(self) -> None:
        """A hash the directory never loaded has no grant."""
        directory = KeyDirectory()
        directory.load([account()], [key()], seq=1)
        assert directory.lookup(hash_secret("another secret")) is None

    def test_a_key_loaded_as_revoked_is_not_indexed(self) -> None:
        """A revoked row never enters the directory."""
        directory = KeyDirectory()
        row = key(revoked_at_ms=NOW_MS)
        directory.load([account()], [row], seq=1)
        assert grant(directory, row) is None
        assert len(directory) == 0

    def test_revoking_a_key_removes_its_hash(self) -> None:
        """Applying the revoked row of a live key drops its hash; other keys stay."""
        directory = KeyDirectory()
        first, second = key("key_1"), key("key_2")
        directory.load([account()], [first, second], seq=1)
        directory.apply_keys([dataclasses.replace(first, revoked_at_ms=NOW_MS)])
        assert grant(directory, first) is None
        assert grant(directory, second) is not None
        assert len(directory) == 1

    def test_forgetting_a_key_removes_its_hash(self) -> None:
        """forget_keys drops a key by id; an unknown id is ignored."""
        directory = KeyDirectory()
        row = key()
        directory.load([account()], [row], seq=1)
        directory.forget_keys(["key_1", "key_never_seen"])
        assert grant(directory, row) is None
        assert len(directory) == 0

    def test_disabling_an_account_flips_the_grants_of_all_its_keys(self) -> None:
        """Every key of a disabled account becomes inactive; another account's keys do not."""
        directory = KeyDirectory()
        mine = [key(f"key_{i}", "acct_1") for i in range(3)]
        theirs = key("key_9", "acct_2")
        directory.load([account("acct_1"), account("acct_2")], [*mine, theirs], seq=1)
        directory.apply_accounts([account("acct_1", "disabled")])
        assert all(not grant_active(directory, row) for row in mine)
        assert grant_active(directory, theirs)
        directory.apply_accounts([account("acct_1", "active")])
        assert all(grant_active(directory, row) for row in mine)
        assert len(directory) == 4

    def test_a_key_of_an_unknown_account_is_inactive_until_the_account_arrives(self) -> None:
        """A key seen before its account is not usable; the account's arrival activates it."""
        directory = KeyDirectory()
        row = key(account_id="acct_late")
        directory.apply_keys([row])
        assert not grant_active(directory, row)
        directory.apply_accounts([account("acct_late")])
        assert grant_active(directory, row)

    def test_a_new_key_of_a_disabled_account_is_inactive(self) -> None:
        """A key added after its account was disabled does not work."""
        directory = KeyDirectory()
        directory.load([account(status="disabled")], [], seq=1)
        row = key()
        directory.apply_keys([row])
        assert not grant_active(directory, row)

    def test_a_revoked_key_stays_out_when_its_account_changes(self) -> None:
        """Re-enabling an account does not bring back a revoked key."""
        directory = KeyDirectory()
        row = key()
        directory.load([account()], [row], seq=1)
        directory.apply_keys([dataclasses.replace(row, revoked_at_ms=NOW_MS)])
        directory.apply_accounts([account(status="disabled")])
        directory.apply_accounts([account(status="active")])
        assert grant(directory, row) is None
        assert len(directory) == 0

    def test_applying_the_same_row_twice_keeps_one_grant(self) -> None:
        """A row seen twice (a reload, a repeated change) is indexed once."""
        directory = KeyDirectory()
        row = key()
        directory.load([account()], [row], seq=1)
        directory.apply_keys([row, row])
        assert len(directory) == 1

    def test_a_changed_allow_list_replaces_the_old_grant(self) -> None:
        """A key row applied again with a new allow-list grants the new list."""
        directory = KeyDirectory()
        row = key(models=("sim-chat",))
        directory.load([account()], [row], seq=1)
        directory.apply_keys([dataclasses.replace(row, models=("sim-embed",))])
        found = grant(directory, row)
        assert found is not None
        assert found.models == frozenset({"sim-embed"})


def grant_active(directory: KeyDirectory, row: KeyRow) -> bool:
    found = grant(directory, row)
    assert found is not None, row.id
    return found.account_active


class TestCheckGrant:
    def test_a_key_without_expiry_of_an_active_account_passes(self) -> None:
        """No expiry and an active account: no error, at any time."""
        check_grant(grant_of(), NOW_MS)
        check_grant(grant_of(), 2**62)

    def test_a_key_works_until_the_millisecond_before_it_expires(self) -> None:
        """Expiry is exclusive: usable at expires_at_ms - 1, not at expires_at_ms."""
        check_grant(grant_of(expires_at_ms=NOW_MS), NOW_MS - 1)
        with pytest.raises(AuthenticationFailed) as caught:
            check_grant(grant_of(expires_at_ms=NOW_MS), NOW_MS)
        assert caught.value.code == "expired_api_key"
        assert caught.value.http_status == 401

    def test_an_expired_key_raises_authentication_failed_long_after(self) -> None:
        """A key stays expired."""
        with pytest.raises(AuthenticationFailed):
            check_grant(grant_of(expires_at_ms=NOW_MS), NOW_MS + 10**9)

    def test_a_disabled_account_raises_permission_denied(self) -> None:
        """A key of a disabled account is a 403 account_disabled."""
        with pytest.raises(PermissionDenied) as caught:
            check_grant(grant_of(account_active=False), NOW_MS)
        assert caught.value.code == "account_disabled"
        assert caught.value.http_status == 403


class TestAllowList:
    def test_a_key_without_a_list_may_use_every_model(self) -> None:
        """models=None allows any model name."""
        assert may_use_model(grant_of(), "sim-chat")
        assert may_use_model(grant_of(), "anything at all")
        check_model(grant_of(), "sim-chat")

    def test_a_key_with_a_list_may_use_only_those_models(self) -> None:
        """Listed models pass; others raise NotFound naming the model."""
        restricted = grant_of(models=frozenset({"sim-chat"}))
        assert may_use_model(restricted, "sim-chat")
        assert not may_use_model(restricted, "sim-embed")
        check_model(restricted, "sim-chat")
        with pytest.raises(NotFound) as caught:
            check_model(restricted, "sim-embed")
        assert caught.value.param == "model"
        assert caught.value.code == "model_not_found"
        assert "sim-embed" in caught.value.message

    def test_a_model_outside_the_list_is_refused_exactly_like_an_unknown_one(self) -> None:
        """The refusal is unknown_model's, byte for byte: it does not say the model exists."""
        restricted = grant_of(models=frozenset({"sim-chat"}))
        with pytest.raises(NotFound) as caught:
            check_model(restricted, "sim-embed")
        assert caught.value.http_status == 404
        assert caught.value.to_body() == unknown_model("sim-embed").to_body()

    def test_an_empty_list_allows_nothing(self) -> None:
        """An empty allow-list is not 'all models'."""
        assert not may_use_model(grant_of(models=frozenset()), "sim-chat")


class TestSecrets:
    def test_a_secret_has_its_prefix_and_at_least_128_random_bits(self) -> None:
        """tm- then at least 22 base64url characters (6 bits each)."""
        secret = new_secret(KEY_PREFIX)
        assert secret.startswith(KEY_PREFIX)
        assert len(secret) - len(KEY_PREFIX) >= 22
        assert set(secret[len(KEY_PREFIX) :]) <= set(
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
        )

    def test_secrets_and_ids_do_not_repeat(self) -> None:
        """A thousand secrets (and ids) are a thousand different values."""
        assert len({new_secret(KEY_PREFIX) for _ in range(1000)}) == 1000
        assert len({new_id("key") for _ in range(1000)}) == 1000

    def test_the_hash_is_hex_sha256_and_depends_on_every_character(self) -> None:
        """64 lowercase hex characters; one changed character changes the hash."""
        digest = hash_secret("tm-abc")
        assert len(digest) == 64
        assert set(digest) <= set("0123456789abcdef")
        assert digest == hash_secret("tm-abc")
        assert digest != hash_secret("tm-abd")
        assert "tm-abc" not in digest
