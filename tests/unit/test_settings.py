"""Settings: environment first, then flags; clear errors for bad values."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mailvia.domain.errors import InvalidInput
from mailvia.settings import Listen, Settings


def test_defaults() -> None:
    s = Settings.load({})
    assert s.http_listen == Listen("127.0.0.1", 8025)
    assert s.submission_listen == Listen("127.0.0.1", 8587)
    assert s.submissions_listen is None
    assert s.max_message_size == 25 * 1024 * 1024
    assert s.database_url.startswith("sqlite:///") and s.database_url.endswith("mailvia.db")


def test_environment_then_flags() -> None:
    env = {
        "MAILVIA_DATA_DIR": "/tmp/x",
        "MAILVIA_HTTP_LISTEN": "127.0.0.1:0",
        "MAILVIA_ALLOW_PRIVATE_HOSTS": "127.0.0.0/8, ::1/128",
        "MAILVIA_TRUSTED_NETWORKS": "10.1.0.0/16=acme",
    }
    s = Settings.load(env, {"data_dir": "/tmp/y", "db_url": None})
    assert s.data_dir == Path("/tmp/y") and s.http_listen.port == 0
    assert ipaddress.ip_address("127.0.0.5") in s.allow_private_hosts[0]
    assert s.trusted_networks[0][1] == "acme"
    assert s.key_file == Path("/tmp/y/master.key")


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MAILVIA_HTTP_LISTEN", "nope"),
        ("MAILVIA_MAX_MESSAGE_SIZE", "big"),
        ("MAILVIA_ALLOW_PRIVATE_HOSTS", "10.0.0.0/33"),
        ("MAILVIA_TRUSTED_NETWORKS", "10.0.0.0/8"),
    ],
)
def test_bad_values_are_clear_errors(name: str, value: str) -> None:
    with pytest.raises(InvalidInput, match=name.removeprefix("MAILVIA_")):
        Settings.load({name: value})


def test_secrets_do_not_show_in_repr() -> None:
    s = Settings.load({"MAILVIA_MASTER_KEY": "c2VjcmV0", "MAILVIA_POOL_RELAY": "smtp://u:pw@h"})
    assert "c2VjcmV0" not in repr(s) and "pw@h" not in repr(s)
