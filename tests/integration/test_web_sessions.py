"""The pages' sessions in process (no browser): the real web app over the world's real SQLite
store through httpx's ASGI transport. Cookie flags, CSRF refusals, forced password change,
sessions ended by a password change and by signing out, safe redirects after signing in,
slowed guessing that never holds up a client that has not failed."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI

from mailvia.passwords import hash_password
from mailvia.web import create_web
from mailvia.web.auth import COOKIE, Session, SessionCodec
from mailvia.web.pages_account import safe_next
from support.world import World

NEW = "a-password-of-my-own"


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    world = World(tmp_path / "data")
    yield world
    await world.close()


def one_time(world: World, email: str) -> str:
    """Give the user a known one-time password (the world's are not kept)."""
    user = world.services.tenancy.user(email)
    world.store.set_password(user.id, hash_password("one-time-pass"), must_change_password=True)
    return "one-time-pass"


def web_app(world: World, *, secure: bool = False) -> FastAPI:
    """The pages over the world's services (failed sign-ins are counted per app)."""
    return create_web(
        world.services,
        secure_cookies=secure,
        session_key=b"k" * 32,
    )


def client(
    world: World, *, secure: bool = False, address: str = "127.0.0.1", app: FastAPI | None = None
) -> httpx.AsyncClient:
    """A browser at client `address`, on `app` (a new one when None)."""
    app = app or web_app(world, secure=secure)
    transport = httpx.ASGITransport(app=app, client=(address, 50000))
    return httpx.AsyncClient(transport=transport, base_url="http://pages")


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, html
    return found.group(1)


async def sign_in(pages: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    token = csrf_of((await pages.get("/signin")).text)
    form = {"csrf": token, "email": email, "password": password, "next": "/activity"}
    return await pages.post("/signin", data=form)


async def test_cookie_flags_and_secure_mode(world: World) -> None:
    async with client(world) as pages:
        cookie = (await pages.get("/signin")).headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    async with client(world, secure=True) as pages:
        cookie = (await pages.get("/signin")).headers["set-cookie"]
    assert "Secure" in cookie


async def test_first_sign_in_forces_a_password_change_then_follows_next(world: World) -> None:
    password = one_time(world, "jane@acme.test")
    async with client(world) as pages:
        before = pages.cookies.get("mailvia_session")
        answer = await sign_in(pages, "jane@acme.test", password)
        assert answer.status_code == 303 and answer.headers["location"] == "/password"
        assert pages.cookies.get("mailvia_session") != before  # a new session on sign-in
        forced = await pages.get("/activity")
        assert forced.status_code == 303 and forced.headers["location"] == "/password"
        page = await pages.get("/password")
        form = {"csrf": csrf_of(page.text), "current": password, "new": "short", "again": "short"}
        assert (await pages.post("/password", data=form)).status_code == 400
        form |= {"new": NEW, "again": NEW}
        changed = await pages.post("/password", data=form)
        assert changed.status_code == 303
        assert (await pages.get("/activity")).status_code == 200
    assert not world.services.tenancy.user("jane@acme.test").must_change_password


async def test_a_password_change_ends_the_other_sessions(world: World) -> None:
    one_time(world, "jane@acme.test")
    user = world.services.tenancy.user("jane@acme.test")
    world.store.set_password(user.id, hash_password(NEW), must_change_password=False)
    async with client(world) as first, client(world) as second:
        await sign_in(first, "jane@acme.test", NEW)
        await sign_in(second, "jane@acme.test", NEW)
        assert (await first.get("/channel")).status_code == 200
        page = await second.get("/password")
        other = NEW + "-again"
        form = {"csrf": csrf_of(page.text), "current": NEW, "new": other, "again": other}
        assert (await second.post("/password", data=form)).status_code == 303
        assert (await second.get("/channel")).status_code == 200
        ended = await first.get("/channel")
        assert ended.status_code == 303 and ended.headers["location"].startswith("/signin")


async def test_posts_without_the_token_are_refused(world: World) -> None:
    async with client(world) as pages:
        await pages.get("/signin")
        refused = await pages.post("/signin", data={"email": "jane@acme.test", "password": "x"})
        assert refused.status_code == 403 and "security token" in refused.text
        header = {"x-csrf-token": "forged"}
        assert (await pages.post("/signout", headers=header)).status_code == 403


async def test_wrong_and_unknown_accounts_look_alike_and_are_slowed(world: World) -> None:
    async with client(world) as pages:
        wrong = await sign_in(pages, "jane@acme.test", "nope")
        unknown = await sign_in(pages, "nobody@acme.test", "nope")
        assert wrong.status_code == unknown.status_code == 401
        assert "not right" in wrong.text and "not right" in unknown.text
        for _ in range(4):
            await sign_in(pages, "jane@acme.test", "nope")
        slowed = await sign_in(pages, "jane@acme.test", "nope")
        assert slowed.status_code == 429 and "try again in" in slowed.text


async def test_respelling_a_login_is_the_same_account_for_the_slowing(world: World) -> None:
    """Every spelling of a login finds one user (`login_key`: fullwidth letters, ideographic
    dots, A-labels), so the failures are counted for that one account: five wrong passwords
    under five spellings slow the sixth try, whatever its spelling (a review found each
    spelling counted apart, 2**len(domain) accounts' worth of guesses)."""
    spellings = ["jane@acme.test", "jane@ａcme.test", "jane@aｃme.test", "jane@acｍe.test",
                 "jane@acmｅ.test", "jane@acme。test"]  # fmt: skip
    user = world.services.tenancy.user("jane@acme.test")
    assert {world.services.tenancy.user(spelling).id for spelling in spellings} == {user.id}
    async with client(world) as pages:
        for spelling in spellings[:5]:
            assert (await sign_in(pages, spelling, "nope")).status_code == 401
        slowed = await sign_in(pages, spellings[5], "nope")
        assert slowed.status_code == 429 and "try again in" in slowed.text


async def test_guessing_from_many_clients_never_holds_up_the_owner(world: World) -> None:
    one_time(world, "jane@acme.test")
    user = world.services.tenancy.user("jane@acme.test")
    world.store.set_password(user.id, hash_password(NEW), must_change_password=False)
    app = web_app(world)  # one app: the counts of failures live in its process
    for n in range(2, 12):
        async with client(world, app=app, address=f"192.0.2.{n}") as guesser:
            assert (await sign_in(guesser, "jane@acme.test", "guess")).status_code == 401
    async with client(world, app=app) as pages:
        owner = await sign_in(pages, "jane@acme.test", NEW)
        assert owner.status_code == 303 and owner.headers["location"] == "/activity"


async def test_signing_out_ends_the_session_for_a_copied_cookie(world: World) -> None:
    one_time(world, "jane@acme.test")
    user = world.services.tenancy.user("jane@acme.test")
    world.store.set_password(user.id, hash_password(NEW), must_change_password=False)
    async with client(world) as pages:
        await sign_in(pages, "jane@acme.test", NEW)
        copied = str(pages.cookies.get(COOKIE))
        page = await pages.get("/channel")
        assert page.status_code == 200
        assert (await pages.post("/signout", data={"csrf": csrf_of(page.text)})).status_code == 303
    async with client(world) as thief:
        thief.cookies.set(COOKIE, copied)
        ended = await thief.get("/channel")
        assert ended.status_code == 303 and ended.headers["location"].startswith("/signin")


def test_sessions_are_signed() -> None:
    codec = SessionCodec(b"k" * 32)
    other = SessionCodec(b"o" * 32)
    value = codec.dumps(Session.fresh("secret"))
    assert codec.loads(value) is not None and codec.loads(value).secret == "secret"  # type: ignore[union-attr]
    assert other.loads(value) is None
    assert codec.loads(value[:-2] + "xx") is None


@pytest.mark.parametrize(
    ("target", "safe"),
    [
        ("/activity?state=held", "/activity?state=held"),
        ("//evil.example/", "/"),
        ("https://evil.example/", "/"),
        ("/\\evil.example", "/"),
        ("", "/"),
    ],
)
def test_only_local_paths_follow_signing_in(target: str, safe: str) -> None:
    assert safe_next(target) == safe
