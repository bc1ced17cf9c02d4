"""The pages' sessions in process (no browser): the real web app over the world's real SQLite
store through httpx's ASGI transport. Cookie flags, CSRF refusals, forced password change,
sessions ended by a password change, safe redirects after signing in, throttled guessing."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from mailvia.passwords import hash_password, verify_password
from mailvia.web import create_web
from mailvia.web.auth import SessionCodec, SignInThrottle
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
    world.services.store.set_password(
        user.id, hash_password("one-time-pass"), must_change_password=True
    )
    return "one-time-pass"


def client(world: World, *, secure: bool = False) -> httpx.AsyncClient:
    app = create_web(
        world.services,
        verify_password=verify_password,
        hash_password=hash_password,
        secure_cookies=secure,
        session_key=b"k" * 32,
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://pages")


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
    world.services.store.set_password(user.id, hash_password(NEW), must_change_password=False)
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


async def test_wrong_and_unknown_accounts_look_alike_and_are_throttled(world: World) -> None:
    async with client(world) as pages:
        wrong = await sign_in(pages, "jane@acme.test", "nope")
        unknown = await sign_in(pages, "nobody@acme.test", "nope")
        assert wrong.status_code == unknown.status_code == 401
        assert "not right" in wrong.text and "not right" in unknown.text
        for _ in range(4):
            await sign_in(pages, "jane@acme.test", "nope")
        slowed = await sign_in(pages, "jane@acme.test", "nope")
        assert slowed.status_code == 429 and "try again in" in slowed.text


def test_the_throttle_doubles_the_wait_and_forgets_after_success() -> None:
    clock = [1000.0]
    throttle = SignInThrottle(free=2, free_per_client=10, clock=lambda: clock[0])
    for _ in range(2):
        assert throttle.wait("a@x.test", "1.2.3.4") == 0
        throttle.failed("a@x.test", "1.2.3.4")
    assert throttle.wait("A@x.test", "5.6.7.8") == 1.0  # per account, any case, any client
    throttle.failed("a@x.test", "1.2.3.4")
    assert throttle.wait("a@x.test", "1.2.3.4") == 2.0
    clock[0] += 2
    assert throttle.wait("a@x.test", "1.2.3.4") == 0
    throttle.succeeded("a@x.test")
    assert throttle.wait("a@x.test", "9.9.9.9") == 0


def test_sessions_are_signed() -> None:
    codec = SessionCodec(b"k" * 32)
    other = SessionCodec(b"o" * 32)
    from mailvia.web.auth import Session

    value = codec.dumps(Session.fresh("usr_1", "print"))
    assert codec.loads(value) is not None and codec.loads(value).user_id == "usr_1"  # type: ignore[union-attr]
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
