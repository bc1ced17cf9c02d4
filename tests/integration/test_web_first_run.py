"""The first run and the organization's pages in process (no browser): the real web app over a
fresh install's real SQLite store (bootstrapped as `serve` does) through httpx's ASGI
transport. Who may do the first run and add domains, what it checks before it changes
anything, and the checklist read from the real state."""

from __future__ import annotations

import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from mailvia.app import wire
from mailvia.domain.errors import Forbidden
from mailvia.outbox.services import Services
from mailvia.outbox.setup import Task
from mailvia.settings import Settings
from mailvia.web import create_web

NEW = "a-password-of-my-own"


@dataclass
class Install:
    services: Services
    admin_password: str


@pytest.fixture
async def install(tmp_path: Path) -> AsyncIterator[Install]:
    """A fresh install, bootstrapped as `serve` does on an empty database."""
    settings = Settings.load({}, {"data_dir": tmp_path / "data", "worker_id": "test"})
    services = wire(settings, create_key=True).services
    boot = services.tenancy.bootstrap(time.time())
    assert boot is not None
    yield Install(services, boot.password)
    await services.aclose()


def pages(install: Install) -> httpx.AsyncClient:
    app = create_web(install.services, secure_cookies=False, session_key=b"k" * 32)
    transport = httpx.ASGITransport(app=app, client=("127.0.0.1", 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://pages")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def post(client: httpx.AsyncClient, path: str, form: dict[str, str]) -> httpx.Response:
    token = csrf_of((await client.get("/signin")).text)
    return await client.post(path, data={"csrf": token, **form})


async def first_sign_in(client: httpx.AsyncClient, email: str, password: str) -> str:
    """Sign in with a one-time password and change it; where the pages lead next."""
    signed = await post(client, "/signin", {"email": email, "password": password})
    assert signed.headers["location"] == "/password", signed.text
    form = {"current": password, "new": NEW, "again": NEW}
    changed = await post(client, "/password", form)
    assert changed.status_code == 303, changed.text
    home = await client.get(changed.headers["location"])
    assert home.status_code == 303
    return str(home.headers["location"])


async def test_the_first_run_makes_the_bootstrap_admin_a_sender_of_their_domain(
    install: Install,
) -> None:
    services = install.services
    async with pages(install) as client:
        assert await first_sign_in(client, "admin@localhost", install.admin_password) == (
            "/welcome?notice=password"
        )
        welcome = await client.get("/welcome")
        assert "admin@localhost" in welcome.text  # what the address replaces
        done = await post(
            client,
            "/welcome",
            {"organization": "Acme", "email": "Ada@Acme.test", "domains": ""},
        )
        assert done.status_code == 303 and done.headers["location"] == "/start?notice=setup"
        start = await client.get("/start")
        assert "Acme: 1 of 4 done" in start.text
        assert 'class="task task-done" id="task-domain"' in start.text
        assert "Your team sends from acme.test." in start.text
        assert (await client.get("/welcome")).headers["location"] == "/start"  # done once
        again = await post(client, "/welcome", {"organization": "x", "email": "b@acme.test"})
        assert again.status_code == 409
    ada = services.tenancy.user("ada@acme.test")  # the same user, signing in as ada now
    assert ada.is_admin and services.tenancy.organization_of(ada).name == "Acme"
    assert services.tenancy.identities(ada) == ["ada@acme.test"]
    services.submitter.check_sender(ada, "ada@acme.test")  # no longer refused as a From
    assert services.accounts.sign_in("ada@acme.test", NEW) is not None
    assert services.accounts.sign_in("admin@localhost", NEW) is None


async def test_the_first_run_checks_everything_before_it_changes_anything(
    install: Install,
) -> None:
    services = install.services
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        for answers, status, says in (
            ({"email": "ada@acme.test", "domains": "globex.test"}, 400, "add acme.test"),
            ({"email": "ada@localhost", "domains": ""}, 400, "your real address"),
            ({"email": "not an address", "domains": ""}, 400, "email"),
            ({"email": "ada@acme.test", "domains": "acme.test, bad_domain!"}, 400, "domain"),
            ({"organization": "_platform", "email": "ada@acme.test"}, 400, "may not start"),
        ):
            refused = await post(client, "/welcome", {"organization": "Acme", **answers})
            assert refused.status_code == status and says in refused.text, refused.text
            assert f'value="{answers["email"]}"' in refused.text  # the form keeps the answers
    admin = services.tenancy.user("admin@localhost")
    assert services.tenancy.organization_of(admin).name == "default"
    assert services.tenancy.domains(admin) == [] and services.tenancy.identities(admin) == []


async def test_members_have_no_first_run_and_land_on_their_channel(install: Install) -> None:
    services = install.services
    admin = services.tenancy.user("admin@localhost")
    services.tenancy.add_domain_as(admin, "acme.test", time.time())
    rep, password = services.tenancy.create_user(
        "rep@acme.test", org_name="default", team_name="default", admin=False, now=time.time()
    )
    async with pages(install) as client:
        assert await first_sign_in(client, rep.email, password) == "/channel?notice=password"
        for path in ("/welcome", "/start", "/organization"):
            assert (await client.get(path)).status_code == 403, path
        refused = await post(client, "/organization/domains", {"domain": "rep.test"})
        assert refused.status_code == 403
    assert services.tenancy.domains(admin) == ["acme.test"]


async def test_domains_come_from_the_operator_once_there_are_two_organizations(
    install: Install,
) -> None:
    services = install.services
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        added = await post(client, "/organization/domains", {"domain": "Acme.test"})
        assert added.status_code == 303, added.text  # one organization: the admin may
        services.tenancy.create_org("globex", time.time())  # the operator makes another
        page = await client.get("/organization")
        assert "mailvia admin add-domain" in page.text and 'name="domain"' not in page.text
        refused = await post(client, "/organization/domains", {"domain": "more.test"})
        assert refused.status_code == 403 and "only the operator" in refused.text
        assert (await client.get("/welcome")).headers["location"] == "/start"
        renamed = await post(client, "/organization/name", {"name": "globex"})
        assert renamed.status_code == 409  # another organization has that name
        team = await post(client, "/organization/teams", {"name": "field sales"})
        assert team.status_code == 303
        assert "field sales" in (await client.get("/organization")).text
    admin = services.tenancy.user("admin@localhost")
    assert services.tenancy.domains(admin) == ["acme.test"]
    with pytest.raises(Forbidden):
        services.tenancy.add_domain_as(admin, "more.test", time.time())


async def test_the_checklist_ticks_from_the_real_state(install: Install) -> None:
    services = install.services
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        await post(client, "/welcome", {"organization": "Acme", "email": "ada@acme.test"})
        ada = services.tenancy.user("ada@acme.test")
        assert services.setup.checklist(ada).done == {Task.DOMAIN}
        invited = await post(client, "/users", {"email": "rep@acme.test", "team": "default"})
        assert invited.status_code == 200
        assert "http://pages/signin?email=rep%40acme.test" in invited.text
        assert services.setup.checklist(ada).done == {Task.DOMAIN, Task.TEAM}
        assert "2 of 4 done" in (await client.get("/start")).text
        home = await client.get("/")
        assert home.headers["location"] == "/start"  # not done: the checklist first
        invitation = await client.get("/signin?email=rep%40acme.test")
        assert 'value="rep@acme.test"' in invitation.text
