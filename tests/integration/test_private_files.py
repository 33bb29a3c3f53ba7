"""The business's files are private to their owner, and its HTML documents can run nothing."""

from __future__ import annotations

import stat
from pathlib import Path

import httpx

from tests.conftest import LiveGateway
from tests.integration.test_store import record
from tokenmill.store.database import open_engine
from tokenmill.store.spool import UsageSpool


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class TestPrivateFiles:
    def test_a_new_home_and_its_database_are_private(self, tmp_path: Path) -> None:
        """A new home folder is 0700, the SQLite file, its WAL and shared memory 0600."""
        home = tmp_path / "home" / ".tokenmill"
        engine = open_engine(f"sqlite:///{home / 'tokenmill.db'}")
        try:
            with engine.connect() as connection:  # open: the WAL and shared memory exist
                connection.exec_driver_sql("SELECT 1")
                sides = sorted(home.glob("tokenmill.db-*"))
                assert [side.name for side in sides] == ["tokenmill.db-shm", "tokenmill.db-wal"]
                assert [mode_of(side) for side in sides] == [0o600, 0o600]
        finally:
            engine.dispose()
        assert mode_of(home) == 0o700
        assert mode_of(home / "tokenmill.db") == 0o600

    def test_the_usage_spool_is_private(self, tmp_path: Path) -> None:
        """The spool folder is 0700 and the spool file 0600 once something is spooled."""
        spool = UsageSpool(tmp_path / "spool" / "usage.jsonl")
        spool.append([(record(1), ())])
        assert mode_of(tmp_path / "spool") == 0o700
        assert mode_of(spool.path) == 0o600


class TestHtmlDocuments:
    def test_a_statement_in_html_carries_a_strict_content_security_policy(
        self, gateway: LiveGateway
    ) -> None:
        """The printable statement forbids scripts, framing and type sniffing."""
        _, _, account_id = gateway.new_key("acme")
        response = httpx.get(
            f"{gateway.url}/admin/v1/accounts/{account_id}/statement",
            params={"format": "html"},
            headers={"Authorization": f"Bearer {gateway.admin_token}"},
            timeout=10,
        )
        assert response.status_code == 200, response.text
        policy = response.headers["content-security-policy"]
        assert "default-src 'none'" in policy
        assert "frame-ancestors 'none'" in policy
        assert "script-src" not in policy
        assert response.headers["x-content-type-options"] == "nosniff"
