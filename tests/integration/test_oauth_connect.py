"""The connect flow in process, against the fake providers: the pages (through httpx's ASGI
transport, a signed-in session per user) and the real SQLite store. A finished consent makes
an OAuth mailbox whose address comes from the provider; every way of bending the flow
(tampered state, a reused code, a wrong PKCE verifier, a mailbox that is not the user's, a
callback in another user's or another session, an API link opened by someone else) is
refused, and nothing is stored."""

from __future__ import annotations

import html
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mailvia.domain.channel import Auth, ChannelState, Provider, TransportKind
from mailvia.ingress.http import create_app
from mailvia.testserver.fake import FakeProviders
from support.oauth import allow, callback, connect, csrf_of, oauth_world, pages, sign_in, start
from support.world import World

JANE = "jane@acme.test"


@pytest.fixture
async def world(tmp_path: Path, fake_providers: FakeProviders) -> AsyncIterator[World]:
    w = oauth_world(tmp_path / "data", fake_providers)
    now = time.time()
    w.services.tenancy.create_user(
        "joe@acme.test", org_name="acme", team_name="sales", admin=False, now=now
    )
    yield w
    await w.close()


@pytest.fixture
async def jane(world: World) -> AsyncIterator[httpx.AsyncClient]:
    async with pages(world) as client:
        yield await sign_in(client, world, JANE)


def oauth_channels(world: World) -> list[object]:
    return [c for c in world.store.list_channels() if c.oauth is not None]


def token_requests(fake: FakeProviders) -> list[dict[str, object]]:
    return [r for r in fake.requests if r["stage"] == "token"]


async def test_connect_gmail_makes_a_mailbox_with_the_providers_address(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    auth = await start(jane, "google")
    params = auth.params
    assert params["code_challenge_method"] == "S256" and len(params["code_challenge"]) == 43
    assert params["access_type"] == "offline" and params["prompt"] == "consent"
    assert "https://www.googleapis.com/auth/gmail.send" in params["scope"].split()
    assert params["redirect_uri"].endswith("/oauth/google/callback") and params["nonce"]
    answer = await callback(jane, "google", allow(fake_providers, auth, "Jane@Acme.test"))
    assert answer.status_code == 303
    [channel] = world.store.list_channels(world.jane.organization_id)
    assert answer.headers["location"] == f"/channels/{channel.id}?notice=oauth_connected"
    assert (channel.oauth, channel.transport, channel.preset) == (
        Provider.GOOGLE,
        TransportKind.GMAIL_API,
        "gmail",
    )
    assert channel.address == JANE and channel.auth is Auth.XOAUTH2
    assert channel.owner.user_id == world.jane.id and channel.state is ChannelState.ACTIVE
    assert not channel.has_password and world.store.channel_secret(channel.id) is None
    page = (await jane.get(answer.headers["location"])).text
    assert "Mailbox connected" in page and "Reconnect with Google" in page
    assert "the current one expires at 20" in page  # a time to come, never "now <time>"
    # The stored token works at the provider: the credential source hands it out.
    credentials = await world.services.dispatcher.credentials(channel)
    assert credentials is not None and credentials.username == JANE
    userinfo = httpx.get(
        fake_providers.settings["MAILVIA_OAUTH_GOOGLE_USERINFO_URL"],
        headers={"authorization": f"Bearer {credentials.password}"},
    )
    assert userinfo.status_code == 200 and userinfo.json()["email"].lower() == JANE


async def test_connect_microsoft_365_by_smtp_asks_for_smtp_send(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    auth = await start(jane, "microsoft", transport="smtp")
    assert "/organizations/oauth2/v2.0/authorize" in auth.url
    scopes = auth.params["scope"].split()
    assert "https://outlook.office.com/SMTP.Send" in scopes and "offline_access" in scopes
    answer = await callback(jane, "microsoft", allow(fake_providers, auth, JANE))
    assert answer.status_code == 303, answer.text
    [channel] = world.store.list_channels(world.jane.organization_id)
    assert (channel.oauth, channel.transport, channel.preset, channel.host) == (
        Provider.MICROSOFT,
        TransportKind.SMTP,
        "microsoft365",
        "smtp.office365.com",
    )
    assert [b.count for b in channel.budgets] == [30, 10_000]  # the preset's limits


async def test_the_api_shows_the_mailbox_but_never_a_token(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    channel_id = await connect(jane, fake_providers, "google", JANE)
    token = world.services.tokens.create(JANE, "t", time.time())
    api = create_app(world.services)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://api", headers=headers
    ) as client:
        view = (await client.get(f"/v1/channels/{channel_id}")).json()
        listed = (await client.get("/v1/channels")).text
    assert view["transport"] == "gmail_api" and view["has_password"] is False
    assert view["oauth"]["provider"] == "google" and view["oauth"]["address"] == JANE
    assert view["oauth"]["expires_at"].endswith("Z")
    credentials = await world.services.dispatcher.credentials(world.store.get_channel(channel_id))
    assert credentials is not None and credentials.password not in listed + str(view)


async def test_a_tampered_state_is_refused_and_nothing_is_stored(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    auth = await start(jane, "google")
    query = allow(fake_providers, auth, JANE)
    answer = await callback(jane, "google", query | {"state": query["state"] + "x"})
    assert answer.status_code == 400 and "nothing was connected" in answer.text
    assert '<a href="/channel">Back to My delivery channel</a>' in answer.text
    assert oauth_channels(world) == [] and token_requests(fake_providers) == []


async def test_a_reused_code_is_refused_by_the_provider_and_nothing_is_stored(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    first = await start(jane, "google")
    used = allow(fake_providers, first, JANE)
    assert (await callback(jane, "google", used)).status_code == 303
    [channel] = oauth_channels(world)
    again = await callback(jane, "google", used)  # the same callback again: its flow is spent
    assert again.status_code == 400 and "already used" in again.text
    second = await start(jane, "google")  # a new flow, finished with the first flow's code
    query = allow(fake_providers, second, JANE) | {"code": used["code"]}
    answer = await callback(jane, "google", query)
    assert answer.status_code == 400 and "invalid_grant" in answer.text
    assert oauth_channels(world) == [channel]


async def test_a_wrong_pkce_verifier_is_refused_and_nothing_is_stored(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    auth = await start(jane, "microsoft")
    other = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"  # someone else's challenge
    answer = await callback(
        jane, "microsoft", allow(fake_providers, auth, JANE, code_challenge=other)
    )
    assert answer.status_code == 400 and "invalid_grant" in answer.text
    assert oauth_channels(world) == []
    [exchange] = token_requests(fake_providers)
    assert exchange["status"] == 400


async def test_a_mailbox_that_is_not_the_users_identity_is_refused_and_let_go(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    auth = await start(jane, "google")
    answer = await callback(jane, "google", allow(fake_providers, auth, "boss@acme.test"))
    assert answer.status_code == 403
    assert "boss@acme.test, which is not one of your sender identities" in answer.text
    assert oauth_channels(world) == []
    [grant] = fake_providers.consents()
    assert grant.account == "boss@acme.test" and grant.revoked  # Google's consent let go


async def test_a_callback_in_another_users_session_is_refused_and_spends_the_flow(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    """Joe (with a domain-wide identity) sends jane his consent link; jane allows with her
    mailbox; her browser comes back in her own session: refused, and Joe cannot use it."""
    world.services.tenancy.grant("joe@acme.test", "@acme.test", time.time())
    async with pages(world) as joe:
        await sign_in(joe, world, "joe@acme.test")
        auth = await start(joe, "google")
        query = allow(fake_providers, auth, JANE)
        answer = await callback(jane, "google", query)
        assert answer.status_code == 403 and "another browser session" in answer.text
        late = await callback(joe, "google", query)  # jane forwards the URL to joe
        assert late.status_code == 400 and "already used" in late.text
    assert oauth_channels(world) == [] and token_requests(fake_providers) == []


async def test_a_callback_in_another_session_of_the_same_user_is_refused(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    auth = await start(jane, "google")
    query = allow(fake_providers, auth, JANE)
    async with pages(world) as elsewhere:
        await sign_in(elsewhere, world, JANE)
        assert (await callback(elsewhere, "google", query)).status_code == 403
    async with pages(world) as anonymous:
        auth = await start(jane, "google")
        query = allow(fake_providers, auth, JANE)
        assert (await callback(anonymous, "google", query)).status_code == 403
    assert oauth_channels(world) == [] and token_requests(fake_providers) == []


async def test_an_api_link_needs_its_users_own_sign_in(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    token = world.services.tokens.create(JANE, "t", time.time())
    api = create_app(world.services)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://api", headers=headers
    ) as client:
        first = (await client.get("/v1/oauth/google/start", params={"transport": "smtp"})).json()
        second = (await client.get("/v1/oauth/google/start")).json()
        bad = await client.get("/v1/oauth/google/start", params={"transport": "graph"})
    assert bad.status_code == 422 and "gmail_api" in bad.json()["detail"]
    link = httpx.URL(first["authorization_url"]).path
    assert link.startswith("/oauth/go/") and first["expires_at"].endswith("Z")
    async with pages(world) as anonymous:
        answer = await anonymous.get(link)
        assert answer.status_code == 303 and answer.headers["location"].startswith("/signin")
    async with pages(world) as joe:
        await sign_in(joe, world, "joe@acme.test")
        assert (await joe.get(link)).status_code == 403  # someone else's link: spent
    assert (await jane.get(link)).status_code == 400
    auth = await start(jane, "google", go=httpx.URL(second["authorization_url"]).path)
    assert (await callback(jane, "google", allow(fake_providers, auth, JANE))).status_code == 303
    [channel] = oauth_channels(world)
    assert channel.transport is TransportKind.GMAIL_API  # type: ignore[attr-defined]


async def test_declined_consent_connects_nothing(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    auth = await start(jane, "google")
    query = {"state": auth.params["state"], "error": "access_denied"}
    answer = await callback(jane, "google", query)
    assert answer.status_code == 400 and "access_denied" in answer.text
    assert oauth_channels(world) == []


async def test_disconnect_revokes_at_google_and_remove_deletes_the_tokens(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    google = await connect(jane, fake_providers, "google", JANE)
    # One own channel per address: the Microsoft mailbox is another of jane's addresses.
    world.services.tenancy.grant(JANE, "jane.ms@acme.test", time.time())
    microsoft = await connect(jane, fake_providers, "microsoft", "jane.ms@acme.test")
    store = world.store
    world.send(subject="waiting")
    token = world.services.tokens.create(JANE, "t", time.time())
    api = create_app(world.services)
    headers = {"authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=api), base_url="http://api", headers=headers
    ) as client:
        answer = await client.post(f"/v1/channels/{google}/disconnect")
        assert answer.status_code == 200, answer.text
        done = answer.json()
        assert done["revoked"] is True and done["held"] == 1
        assert done["channel"]["state"] == "disconnected"
        assert done["channel"]["oauth"]["expires_at"] is None
        assert "reconnect with Google" in done["channel"]["state_reason"]
        assert store.oauth_tokens(google) is None  # type: ignore[attr-defined]
        google_grants = [g for g in fake_providers.consents() if g.provider == "google"]
        assert google_grants and all(g.revoked for g in google_grants)
        # Microsoft has no revocation: the tokens go with the channel, and the answer says so.
        answer = await client.post(f"/v1/channels/{microsoft}/disconnect")
        assert answer.json()["revoked"] is False
        assert (await client.delete(f"/v1/channels/{microsoft}")).status_code == 204
        refused = await client.post(f"/v1/channels/{microsoft}/disconnect")
        assert refused.status_code == 404
    page = (await jane.get(f"/channels/{google}?notice=oauth_no_revocation")).text
    assert "Microsoft offers no way for an app to revoke a refresh token" in page
    assert [r for r in fake_providers.requests if r["stage"] == "revoke"]


async def test_the_pages_disconnect_button_revokes_and_offers_reconnect(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    google = await connect(jane, fake_providers, "google", JANE)
    page = (await jane.get(f"/channels/{google}")).text
    assert f'action="/channels/{google}/disconnect"' in page
    answer = await jane.post(f"/channels/{google}/disconnect", data={"csrf": csrf_of(page)})
    assert answer.status_code == 303
    assert answer.headers["location"] == f"/channels/{google}?notice=oauth_revoked"
    shown = (await jane.get(answer.headers["location"])).text
    assert "the consent is revoked at Google" in shown
    # the rep's own Disconnect: no server refused a sign-in, and no "0 messages are held"
    assert "0 messages are held" not in shown and "No mail is waiting for it" in shown
    assert "the server stopped accepting" not in shown
    assert f'href="/oauth/google/start?channel={google}">Reconnect with Google' in shown
    assert world.store.get_channel(google).state is ChannelState.DISCONNECTED
    assert all(c.revoked for c in fake_providers.consents())
    forged = await jane.post(f"/channels/{google}/disconnect", data={})
    assert forged.status_code == 403  # without the session's CSRF token


async def test_a_refused_connection_says_what_to_do_next(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    """The rep who meets a refusal is told the next step in words, not only the provider's
    code: Deny (or an admin approval the provider asks for) means choose Allow or ask an
    admin; the organization's app refused at the code exchange (invalid_client: its secret
    wrong or expired) means an admin mends it on the Team channels page."""
    auth = await start(jane, "google")
    query = {"state": auth.params["state"], "error": "access_denied"}
    denied = (await callback(jane, "google", query)).text
    assert "choose Allow" in denied and "ask an admin" in denied
    fake_providers.set_faults(["token=401 invalid_client"])
    auth = await start(jane, "google")
    answer = await callback(jane, "google", allow(fake_providers, auth, JANE))
    assert answer.status_code == 400 and "invalid_client" in answer.text
    # the app in use is the operator's (the settings): whoever runs mailvia mends it, or an
    # admin sets up the organization's own; no secret for the admin to enter on the Team page
    refused = " ".join(html.unescape(answer.text).split())
    assert "Google refused the operator's OAuth app (invalid_client)" in refused
    assert "ask whoever runs mailvia to mend it" in refused
    assert "sets up the organization's own app on the Team channels page" in refused
    # a code the provider no longer honours (invalid_grant: used, expired): connect again
    fake_providers.set_faults(["token=400 invalid_grant"])
    auth = await start(jane, "google")
    answer = await callback(jane, "google", allow(fake_providers, auth, JANE))
    spent = " ".join(html.unescape(answer.text).split())
    assert answer.status_code == 400, answer.text
    assert "Google refused (invalid_grant): nothing was connected." in spent
    assert "Connect again from My delivery channel" in spent
    assert oauth_channels(world) == []


async def test_an_admin_sees_who_can_reconnect_a_reps_mailbox_not_a_link_that_refuses(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    """Only a mailbox's owner can give its consent, so a rep's mailbox page offers an admin no
    "Reconnect with Google" (which answered "Refused") but says who can; the rep keeps it."""
    channel_id = await connect(jane, fake_providers, "google", JANE)
    link = f'href="/oauth/google/start?channel={channel_id}"'
    assert link in (await jane.get(f"/channels/{channel_id}")).text
    async with pages(world) as boss:
        await sign_in(boss, world, world.admin.email)
        page = (await boss.get(f"/channels/{channel_id}")).text
    assert link not in page and f"Only {JANE} can sign in to" in " ".join(page.split())
    # disconnected, it says who can reconnect it, and that the held mail then leaves
    fake_providers.set_faults(["refresh=400 invalid_grant"])
    await world.services.tester.test(world.jane, channel_id, now=time.time())
    assert world.store.get_channel(channel_id).state is ChannelState.DISCONNECTED
    async with pages(world) as boss:
        await sign_in(boss, world, world.admin.email)
        page = " ".join((await boss.get(f"/channels/{channel_id}")).text.split())
    assert link not in page and "Reconnect with Google</a>" not in page
    assert f"Only {JANE} can reconnect this mailbox: the consent comes from the mailbox" in page
    assert "The held mail then leaves, in its original order." in page


async def test_an_emptied_tenant_on_the_team_page_is_organizations_not_the_stored_one(
    world: World,
) -> None:
    """The Team page's tenant field shows the stored tenant, so emptying it asks for the
    default (`organizations`); only the API and the CLI, which may leave it out, keep it."""
    async with pages(world) as boss:
        await sign_in(boss, world, world.admin.email)

        async def save(tenant: str, secret: str) -> str:
            csrf = csrf_of((await boss.get("/team")).text)
            form = {"csrf": csrf, "client_id": "entra-app", "client_secret": secret}
            answer = await boss.post("/team/oauth/microsoft", data=form | {"tenant": tenant})
            assert answer.status_code in (200, 303), answer.text
            apps = world.services.oauth_apps
            assert apps is not None
            return apps.view(world.admin, Provider.MICROSOFT).tenant or ""

        assert await save("contoso.onmicrosoft.com", "s1") == "contoso.onmicrosoft.com"
        assert await save("", "") == "organizations"


async def test_a_disconnect_without_a_reason_blames_no_server_and_points_nowhere(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    """A channel disconnected with no reason recorded: the banner blames no server, and the
    state's words promise no reason "below"."""
    channel_id = await connect(jane, fake_providers, "google", JANE)
    world.store.set_channel_state(channel_id, ChannelState.DISCONNECTED, None, time.time())
    banner = " ".join(html.unescape((await jane.get("/channel")).text).split())
    assert "is disconnected" in banner and "The server refused" not in banner
    assert "No reason was recorded: Test connection on its page" in banner
    page = " ".join(html.unescape((await jane.get(f"/channels/{channel_id}")).text).split())
    assert "Disconnected: this channel sends nothing until it is reconnected." in page
    assert "why is said below" not in page


async def test_an_address_the_provider_gives_in_a_labels_is_stored_as_every_door_stores_it(
    world: World, jane: httpx.AsyncClient, fake_providers: FakeProviders
) -> None:
    """The provider vouches for jane@xn--strae-oqa.test; the mailbox is stored as the
    address's one form (check_address: U-labels, as the API, the CLI and the pages store
    it), so the route and the one-channel rule find it."""
    now = time.time()
    world.services.tenancy.add_domain("acme", "straße.test", now)
    world.services.tenancy.grant(JANE, "jane@straße.test", now)
    channel_id = await connect(jane, fake_providers, "google", "Jane@XN--STRAE-OQA.test")
    channel = world.store.get_channel(channel_id)
    assert (channel.address, channel.username) == ("jane@straße.test", "jane@straße.test")
