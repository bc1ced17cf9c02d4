"""Settings: environment first, then flags; clear errors for bad values."""

from __future__ import annotations

import ipaddress
from dataclasses import fields
from pathlib import Path

import pytest

from mailvia.domain.errors import InvalidInput
from mailvia.domain.ratelimit import RequestRate
from mailvia.ingress.cli import supervise
from mailvia.settings import DISPATCH_MODES, Listen, Settings, environment


def test_defaults() -> None:
    s = Settings.load({})
    assert s.http_listen == Listen("127.0.0.1", 8025)
    assert s.submission_listen == Listen("127.0.0.1", 8587)
    assert s.submissions_listen is None
    assert s.max_message_size == 25 * 1024 * 1024
    assert s.api_rate_limit == RequestRate(600, 60.0)
    assert s.api_recipient_limit == RequestRate(20_000, 60.0)
    assert (s.api_batch_max_messages, s.api_request_max_recipients) == (1000, 10_000)
    assert (s.submission_max_connections, s.submission_max_connections_per_client) == (500, 50)
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
        ("MAILVIA_API_RATE_LIMIT", "fast"),
        ("MAILVIA_API_RATE_LIMIT", "0/60"),
        ("MAILVIA_API_RECIPIENT_LIMIT", "many"),
        ("MAILVIA_API_BATCH_MAX_MESSAGES", "0"),
        ("MAILVIA_API_REQUEST_MAX_RECIPIENTS", "-5"),
        ("MAILVIA_SUBMISSION_MAX_CONNECTIONS", "x"),
        ("MAILVIA_SUBMISSION_MAX_CONNECTIONS_PER_CLIENT", "0"),
    ],
)
def test_bad_values_are_clear_errors(name: str, value: str) -> None:
    with pytest.raises(InvalidInput, match=name.removeprefix("MAILVIA_")):
        Settings.load({name: value})


@pytest.mark.parametrize(
    ("env", "flag", "rate"),
    [
        ("100/10", None, RequestRate(100, 10.0)),
        ("OFF", None, None),
        ("off", "5/1", RequestRate(5, 1.0)),
        ("5/1", "off", None),
    ],
)
def test_api_rate_limit_from_environment_then_flag(
    env: str, flag: str | None, rate: RequestRate | None
) -> None:
    s = Settings.load({"MAILVIA_API_RATE_LIMIT": env}, {"api_rate_limit": flag})
    assert s.api_rate_limit == rate


def test_a_bad_api_rate_limit_says_what_is_expected() -> None:
    with pytest.raises(InvalidInput, match=r"setting API_RATE_LIMIT: '10 per minute': .*COUNT/SEC"):
        Settings.load({}, {"api_rate_limit": "10 per minute"})


def test_secrets_do_not_show_in_repr() -> None:
    s = Settings.load({"MAILVIA_MASTER_KEY": "c2VjcmV0", "MAILVIA_POOL_RELAY": "smtp://u:pw@h"})
    assert "c2VjcmV0" not in repr(s) and "pw@h" not in repr(s)


DISPATCH_TEXTS = [
    ("", "auto"), ("auto", "auto"), ("on", "auto"), ("YES", "auto"),
    ("process", "process"), ("inline", "inline"), ("off", "off"), ("false", "off"),
]  # fmt: skip


@pytest.mark.parametrize(("raw", "mode"), DISPATCH_TEXTS)
def test_dispatch_modes_and_the_old_on_off(raw: str, mode: str) -> None:
    assert Settings.load({"MAILVIA_DISPATCH": raw}).dispatch == mode


def test_a_bad_dispatch_names_the_modes() -> None:
    with pytest.raises(InvalidInput, match=r"DISPATCH.*auto, process, inline, off"):
        Settings.load({"MAILVIA_DISPATCH": "threads"})


def test_auto_dispatch_is_a_process_with_two_cpus_or_more(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(supervise, "cpus", lambda: 2)
    assert [supervise.dispatch_mode(m) for m in DISPATCH_MODES] == [
        "process", "process", "inline", "off"
    ]  # fmt: skip
    monkeypatch.setattr(supervise, "cpus", lambda: 1)
    assert supervise.dispatch_mode("auto") == "inline"


EVERY_FIELD_AWAY_FROM_ITS_DEFAULT = {
    "data_dir": "/srv/mail", "db_url": "postgresql://u@db/mail", "http_listen": "[::1]:9000",
    "submission_listen": "off", "submissions_listen": "0.0.0.0:465",
    "submission_tls_cert": "/c.pem", "submission_tls_key": "/k.pem", "metrics_listen": ":9100",
    "metrics_token": "m-secret", "master_key_file": "/key", "master_key": "k-secret",
    "pool_relay": "smtp://u:p@relay:587", "notice_from": "ops@x.test",
    "allow_private_hosts": "10.0.0.0/8,::1/128", "trusted_networks": "10.1.0.0/16=acme",
    "trusted_proxies": "192.168.0.0/24", "max_message_size": "1000", "api_rate_limit": "off",
    "api_recipient_limit": "5/1.5", "api_batch_max_messages": "7",
    "api_request_max_recipients": "8", "submission_max_connections": "9",
    "submission_max_connections_per_client": "3", "worker_id": "w-1", "lease_seconds": "2.5",
    "claim_batch": "11", "shutdown_seconds": "0.5", "dispatch": "inline",
    "delivery_store": "thread",
    "gmail_api_url": "http://127.0.0.1:1", "graph_api_url": "http://127.0.0.1:2",
    "gmail_api_max_size": "12", "graph_api_max_size": "13", "public_url": "https://mail.x",
    "oauth_google_client_id": "g", "oauth_google_client_secret": "g-secret",
    "oauth_microsoft_client_id": "m", "oauth_microsoft_client_secret": "ms-secret",
    "oauth_microsoft_tenant": "t",
    **{
        f"oauth_{name}": f"http://127.0.0.1:3/{name}"
        for name in (
            "google_authorize_url", "google_token_url", "google_revoke_url",
            "google_userinfo_url", "google_jwks_url", "microsoft_authorize_url",
            "microsoft_token_url", "microsoft_jwks_url",
        )
    },
}  # fmt: skip


def test_a_child_process_environment_gives_the_same_settings() -> None:
    """What serve gives its worker process (flags included): every setting, read back equal."""
    assert set(EVERY_FIELD_AWAY_FROM_ITS_DEFAULT) == {f.name for f in fields(Settings)}
    settings = Settings.load({}, EVERY_FIELD_AWAY_FROM_ITS_DEFAULT)
    assert all(getattr(settings, f.name) != getattr(Settings(), f.name) for f in fields(Settings))
    assert Settings.load(environment(settings)) == settings
    assert environment(Settings()) == {}  # defaults stay unset


def test_delivery_store_is_a_process_unless_set_to_threads() -> None:
    assert Settings.load({}).delivery_store == "process"
    assert Settings.load({"MAILVIA_DELIVERY_STORE": " Thread "}).delivery_store == "thread"
    with pytest.raises(InvalidInput, match="thread, process"):
        Settings.load({"MAILVIA_DELIVERY_STORE": "fork"})
