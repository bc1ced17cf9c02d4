"""The organization's own OAuth apps over the HTTP API: admins set, read and remove them;
members get 403; another organization sees none of acme's (404); the client secret is
write-only (`has_client_secret`), sealed at rest, kept when omitted; the operator-wide app
from the settings stands in for an organization without its own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from mailvia.domain.channel import Provider
from mailvia.domain.oauth import AppSource
from support.api import Api, assert_problem
from support.world import World

SECRET = "org-client-secret-9f2X"
GOOGLE = "/v1/organization/oauth/google"
MICROSOFT = "/v1/organization/oauth/microsoft"


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api = Api(World(tmp_path / "data"))
    yield api
    await api.aclose()


async def test_admins_set_read_and_remove_the_app_and_never_see_the_secret(api: Api) -> None:
    boss = api.client("boss")
    body = {"client_id": "acme.apps.example", "client_secret": SECRET}
    put = await boss.put(GOOGLE, json=body)
    assert put.status_code == 200, put.text
    view = put.json()
    assert view["client_id"] == "acme.apps.example" and view["has_client_secret"] is True
    assert view["source"] == "organization" and view["tenant"] is None
    assert view["redirect_uri"].endswith("/oauth/google/callback")
    got = await boss.get(GOOGLE)
    assert got.json() == view | {"updated_at": got.json()["updated_at"]}
    assert SECRET not in put.text + got.text
    # A new client id without a secret keeps the stored secret.
    renamed = await boss.put(GOOGLE, json={"client_id": "acme2.apps.example"})
    assert renamed.status_code == 200 and renamed.json()["has_client_secret"] is True
    apps = api.world.services.oauth_apps
    assert apps is not None
    app = apps.resolve(api.world.admin.organization_id, Provider.GOOGLE)
    assert app is not None and app.client_secret == SECRET and SECRET not in repr(app)
    assert (await boss.delete(GOOGLE)).status_code == 204
    assert_problem(await boss.get(GOOGLE), 404, "no google oauth app")
    assert_problem(await boss.delete(GOOGLE), 404)


async def test_members_are_refused_and_another_organization_sees_nothing(api: Api) -> None:
    boss, jane, ann = api.client("boss"), api.client("jane"), api.client("ann")
    body = {"client_id": "acme.apps.example", "client_secret": SECRET}
    assert (await boss.put(GOOGLE, json=body)).status_code == 200
    assert_problem(await jane.get(GOOGLE), 403, "only admins")
    assert_problem(await jane.put(GOOGLE, json=body), 403)
    assert_problem(await jane.delete(GOOGLE), 403)
    assert_problem(await ann.get(GOOGLE), 404)
    assert_problem(await ann.delete(GOOGLE), 404)
    assert (await boss.get(GOOGLE)).status_code == 200  # acme's app is untouched


async def test_bad_app_settings_are_refused(api: Api) -> None:
    boss = api.client("boss")
    assert_problem(await boss.put(GOOGLE, json={"client_id": "x"}), 422, "client_secret")
    tenant = {"client_id": "x", "client_secret": "s", "tenant": "t"}
    assert_problem(await boss.put(GOOGLE, json=tenant), 422, "only a microsoft app")
    bad = {"client_id": "x", "client_secret": "s", "tenant": "a/b"}
    assert_problem(await boss.put(MICROSOFT, json=bad), 422, "tenant")
    assert_problem(await boss.put(MICROSOFT, json={"client_id": "a b", "client_secret": "s"}), 422)
    assert_problem(await boss.put("/v1/organization/oauth/yahoo", json=tenant), 422)
    empty = assert_problem(
        await boss.put(GOOGLE, json={"client_id": "", "client_secret": "s"}), 422
    )
    assert empty["detail"].endswith("client_id: String should have at least 1 character")
    long = {"client_id": "x" * 501, "client_secret": "s"}
    said = assert_problem(await boss.put(GOOGLE, json=long), 422)["detail"]
    assert said.endswith("client_id: String should have at most 500 characters"), said
    made = await boss.put(MICROSOFT, json={"client_id": "entra-app", "client_secret": "s"})
    assert made.status_code == 200 and made.json()["tenant"] == "organizations"


async def test_a_rotated_secret_keeps_the_apps_tenant(api: Api) -> None:
    """Rotating the secret (`admin oauth-app ... --client-secret-stdin` without --tenant, or a
    PUT without `tenant`) keeps a single-tenant app single-tenant: the tenant left out is the
    stored one, as the secret left out is."""
    boss = api.client("boss")
    body = {"client_id": "entra-app", "client_secret": "s1", "tenant": "contoso.onmicrosoft.com"}
    assert (await boss.put(MICROSOFT, json=body)).json()["tenant"] == "contoso.onmicrosoft.com"
    rotated = await boss.put(MICROSOFT, json={"client_id": "entra-app", "client_secret": "s2"})
    assert rotated.status_code == 200 and rotated.json()["tenant"] == "contoso.onmicrosoft.com"
    apps = api.world.services.oauth_apps
    assert apps is not None
    app = apps.resolve(api.world.admin.organization_id, Provider.MICROSOFT)
    assert app is not None and app.client_secret == "s2"
    changed = {"client_id": "entra-app", "tenant": "organizations"}
    assert (await boss.put(MICROSOFT, json=changed)).json()["tenant"] == "organizations"


async def test_the_operators_app_stands_in(tmp_path: Path) -> None:
    world = World(
        tmp_path / "data",
        oauth_microsoft_client_id="operator-app",
        oauth_microsoft_client_secret="operator-secret",
        oauth_microsoft_tenant="contoso.onmicrosoft.com",
    )
    api = Api(world)
    try:
        view = (await api.client("boss").get(MICROSOFT)).json()
        assert view["source"] == AppSource.OPERATOR and view["client_id"] == "operator-app"
        assert view["tenant"] == "contoso.onmicrosoft.com" and view["has_client_secret"]
        assert_problem(await api.client("boss").delete(MICROSOFT), 404)  # not the org's own
        own = {"client_id": "own-app", "client_secret": SECRET}
        assert (await api.client("boss").put(MICROSOFT, json=own)).json()["source"] == (
            "organization"
        )
    finally:
        await api.aclose()


def test_the_secret_is_sealed_at_rest(tmp_path: Path) -> None:
    world = World(tmp_path / "data")
    apps = world.services.oauth_apps
    assert apps is not None
    apps.put(
        world.admin,
        Provider.GOOGLE,
        client_id="acme.apps.example",
        client_secret=SECRET,
        tenant=None,
        now=time.time(),
    )
    files = [p.read_bytes() for p in (tmp_path / "data").iterdir() if p.is_file()]
    asyncio.run(world.close())
    assert any(b"acme.apps.example" in blob for blob in files)  # the search works
    assert not any(SECRET.encode() in blob for blob in files)
