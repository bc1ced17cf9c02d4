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
from mailvia.domain.channel import Auth, Scope, Security
from mailvia.domain.errors import Forbidden
from mailvia.outbox.channels import ChannelSpec
from mailvia.outbox.compose import Draft, compose
from mailvia.outbox.listeners import SubmissionPort, SubmissionTls
from mailvia.outbox.services import Services
from mailvia.outbox.setup import Task
from mailvia.outbox.submit import Submission
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
    settings = Settings.load(
        {},
        {"data_dir": tmp_path / "data", "worker_id": "test", "allow_private_hosts": "127.0.0.0/8"},
    )
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


async def test_the_first_run_takes_a_domain_typed_as_a_labels(install: Install) -> None:
    """`xn--bcher-kva.test` is `bücher.test`: the address at it is at a sending domain, and
    the domain is stored once, as addresses hold it."""
    services = install.services
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        answers = {"organization": "", "email": "ada@bücher.test", "domains": "XN--BCHER-KVA.test"}
        done = await post(client, "/welcome", answers)
        assert done.status_code == 303, done.text
    ada = services.tenancy.user("ada@bücher.test")
    assert services.tenancy.domains(ada) == ["bücher.test"]
    services.submitter.check_sender(ada, "ada@bücher.test")


async def test_the_first_run_checks_everything_before_it_changes_anything(
    install: Install,
) -> None:
    services = install.services
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        for answers, status, says in (
            ({"email": "ada@acme.test", "domains": "globex.test"}, 400, "add acme.test"),
            ({"email": "ada@localhost", "domains": ""}, 400, "your real email address"),
            ({"email": "not an address", "domains": ""}, 400, "email"),
            (  # told once, as a domain (not as `postmaster@bad_domain!`)
                {"email": "ada@acme.test", "domains": "acme.test, bad_domain!"},
                400,
                "domain &#39;bad_domain!&#39;: The domain contains invalid characters",
            ),
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


async def test_a_custom_channel_form_offers_the_organizations_domains_to_share(
    install: Install,
) -> None:
    """The bootstrap admin (admin@localhost, not a sender) adds the team's relay from Team
    channels: the form's sending domains were `localhost`, their address's domain, which the
    save then refuses; the organization's own domains are what a shared channel carries."""
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        services = install.services
        services.tenancy.create_org("globex", time.time())  # the operator assigns domains now
        for domain in ("acme.test", "mail.acme.test"):
            services.tenancy.add_domain("default", domain, time.time())
        form = (await client.get("/channels/new")).text
    assert shared_domains(form) == "acme.test, mail.acme.test"


def shared_domains(form: str) -> str:
    found = re.search(r'name="domains"[^>]*value="([^"]*)"', form)
    assert found is not None, form
    return found.group(1)


async def test_with_no_sending_domains_the_form_offers_none_and_says_to_add_one(
    install: Install,
) -> None:
    """A fresh install (admin@localhost, no sending domains): the form offered `localhost`,
    which the save refuses."""
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        form = (await client.get("/channels/new")).text
    assert shared_domains(form) == ""
    assert "no sending domains yet: add one on the Organization page" in form


async def test_an_admin_at_one_of_the_domains_is_offered_that_domain_only(
    install: Install,
) -> None:
    """Sharing a relay for every domain of the organization may route their mail through a
    relay not allowed to send for them: the admin's own domain is the first value."""
    services = install.services
    admin = services.tenancy.user("admin@localhost")
    for domain in ("acme.test", "mail.acme.test"):
        services.tenancy.add_domain_as(admin, domain, time.time())
    ada, password = services.tenancy.create_user(
        "ada@mail.acme.test", org_name="default", team_name="default", admin=True, now=time.time()
    )
    async with pages(install) as client:
        await first_sign_in(client, ada.email, password)
        form = (await client.get("/channels/new")).text
    assert shared_domains(form) == "mail.acme.test"
    assert "no sending domains yet" not in form


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
        # no team channel yet: the way on is their own mailbox only
        assert "Then they can connect their own mailbox" in " ".join(invited.text.split())
        assert services.setup.checklist(ada).done == {Task.DOMAIN, Task.TEAM}
        assert "2 of 4 done" in (await client.get("/start")).text
        home = await client.get("/")
        assert home.headers["location"] == "/start"  # not done: the checklist first
        invitation = await client.get("/signin?email=rep%40acme.test")
        assert 'value="rep@acme.test"' in invitation.text
        relay = ChannelSpec(
            name="relay", host="127.0.0.1", port=9, security=Security.NONE, auth=Auth.NONE,
            scope=Scope.DOMAIN, domains=("acme.test",), team_name="default",
        )  # fmt: skip
        services.channels.add(ada, relay, time.time())
        second = await post(client, "/users", {"email": "rep2@acme.test", "team": "default"})
        said = " ".join(second.text.split())
        assert "Then they can use the team channel, or connect their own mailbox" in said


async def test_activity_pages_through_and_searches_subjects(install: Install) -> None:
    services = install.services
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        await post(client, "/welcome", {"organization": "Acme", "email": "ada@acme.test"})
        ada = services.tenancy.user("ada@acme.test")
        relay = ChannelSpec(
            name="relay",
            host="127.0.0.1",
            port=9,  # nothing listens; nothing is dispatched in this test anyway
            security=Security.NONE,
            auth=Auth.NONE,
            scope=Scope.DOMAIN,
            domains=("acme.test",),
            team_name="default",
        )
        services.channels.add(ada, relay, time.time())
        drafts = [
            Draft(
                from_="ada@acme.test",
                to=(f"buyer{i}@example.test",),
                subject=f"offer {i}",
                text="hi",
            )
            for i in range(27)
        ]
        services.submitter.submit(
            ada,
            [Submission(compose(d, now=time.time(), max_size=100_000)) for d in drafts],
            now=time.time(),
        )
        first = (await client.get("/activity")).text
        assert first.count('class="card message"') == 25
        assert "offer 26" in first and "offer 1<" not in first  # newest first
        assert '<time datetime="' in first and "just now" in first
        older = re.search(r'href="(/activity\?[^"]*cursor=[^"]+)">Older messages', first)
        assert older, first
        second = (await client.get(older.group(1).replace("&amp;", "&"))).text
        assert second.count('class="card message"') == 2 and "Newest messages" in second
        assert "offer 1<" in second and "offer 0<" in second
        found = (await client.get("/activity", params={"q": "OFFER 13"})).text
        assert found.count('class="card message"') == 1 and "buyer13@example.test" in found
        by_rcpt = (await client.get("/activity", params={"q": "buyer2"})).text
        assert by_rcpt.count('class="card message"') == 1 + 7  # buyer2, buyer20..26
        none = (await client.get("/activity", params={"q": "offer", "state": "delivered"})).text
        assert "No messages match this search." in none


async def test_the_tokens_page_gives_the_running_submission_settings(install: Install) -> None:
    services = install.services
    async with pages(install) as client:
        await first_sign_in(client, "admin@localhost", install.admin_password)
        off = (await client.get("/tokens")).text
        assert "SMTP submission is off" in off
        services.listeners.submission_bound(SubmissionPort("0.0.0.0", 587, implicit_tls=False))
        services.listeners.submission_bound(SubmissionPort("10.0.0.5", 465, implicit_tls=True))
        services.listeners.submission_certificate(SubmissionTls(True, "AB:CD"))
        page = (await client.get("/tokens")).text
    assert "<code>pages</code>, port <code>587</code>" in page  # every address: as reached
    assert "<code>10.0.0.5</code>, port <code>465</code>" in page
    assert "SSL/TLS (TLS from the first byte)" in page and "STARTTLS" in page
    assert "self-signed" in page and "AB:CD" in page
    assert "<code>admin@localhost</code>" in page  # the user name to give
