"""Test connection over HTTP: unsaved (nothing stored) and saved (a new password tried,
not saved); another organization's channel is 404."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.testserver import TestServer
from support.api import Api, assert_problem, open_api
from support.world import make_certs


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    async with open_api(tmp_path / "data") as api:
        yield api


async def test_an_unsaved_channel_is_tested_step_by_step_and_nothing_is_stored(
    api: Api, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "right"}) as smtp:
        body = {
            "name": "box",
            "host": "127.0.0.1",
            "port": smtp.port,
            "username": "jane",
            "password": "wrong",
            "ca_pem": certs.ca_pem,
            "address": "jane@acme.test",
        }
        jane = api.client("jane")
        failed = (await jane.post("/v1/channels/test", json=body)).json()
        assert failed["ok"] is False
        auth = next(s for s in failed["steps"] if s["name"] == "auth")
        assert auth["ok"] is False and auth["reply"].startswith("535") and auth["hint"]
        assert [s["name"] for s in failed["steps"]][:4] == ["resolve", "connect", "tls", "ehlo"]
        passed = (await jane.post("/v1/channels/test", json=body | {"password": "right"})).json()
        assert passed["ok"] is True
        assert (await jane.get("/v1/channels")).json()["data"] == []
        assert "right" not in str(passed) and "wrong" not in str(failed)


async def test_a_saved_channel_with_a_replacement_password_that_is_not_saved(
    api: Api, tmp_path: Path
) -> None:
    certs = make_certs(tmp_path / "certs")
    async with TestServer(tls_cert=certs.cert, tls_key=certs.key, auth={"jane": "right"}) as smtp:
        channel = api.jane_channel(smtp.port, certs=certs, password="wrong")
        jane = api.client("jane")
        url = f"/v1/channels/{channel.id}/test"
        assert (await jane.post(url)).json()["ok"] is False
        assert (await jane.post(url, json={"password": "right"})).json()["ok"] is True
        assert (await jane.post(url)).json()["ok"] is False  # the stored one is unchanged
        assert_problem(await api.client("ann").post(url), 404)
        assert_problem(await jane.post(url, json={"unknown": 1}), 422)
