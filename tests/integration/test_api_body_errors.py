"""A body's errors, over the real app: told in the API's words, JSON's, whichever route reads
it (never a model's class name, `BatchIn`, nor Python's `dictionary` and `list`); a body
declared as something other than JSON is 415 on every route that takes one."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from support.api import Api, assert_problem, message
from support.world import World


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    api = Api(World(tmp_path / "data"))
    yield api
    await api.aclose()


@pytest.mark.parametrize(
    ("body", "loc", "said"),
    [
        (b"[]", "body", "Input should be an object"),
        (b'"x"', "body", "Input should be an object"),
        (b"5", "body", "Input should be an object"),
        (b'{"messages": 5}', "body.messages", "Input should be a valid array"),
        (b'{"messages": [5]}', "body.messages.0", "Input should be an object"),
    ],
)
async def test_a_batch_that_is_not_the_documented_shape_says_so_in_json_words(
    api: Api, body: bytes, loc: str, said: str
) -> None:
    response = await api.client("jane").post(
        "/v1/messages/batch", content=body, headers={"content-type": "application/json"}
    )
    problem = assert_problem(response, 422, said)
    assert problem["errors"] == [{"loc": loc, "message": said}], problem


async def test_a_batchs_message_is_told_as_the_single_post_tells_it(api: Api) -> None:
    wrong = message(to="bob@example.com", headers=["X-A"], envelope=5)
    single = await api.client("jane").post("/v1/messages", json=wrong)
    batch = await api.client("jane").post("/v1/messages/batch", json={"messages": [wrong]})
    singly = assert_problem(single, 422)["errors"]
    batched = assert_problem(batch, 422)["errors"]
    expected = [{**e, "loc": e["loc"].replace("body", "body.messages.0", 1)} for e in singly]
    assert sorted(batched, key=str) == sorted(expected, key=str)
    assert not any(re.search(r"[a-z]In\b|dictionary", e["message"]) for e in batched), batched


async def test_a_body_of_another_route_that_is_not_an_object_says_so(api: Api) -> None:
    response = await api.client("jane").post("/v1/webhooks", json=[])
    assert assert_problem(response, 422)["errors"] == [
        {"loc": "body", "message": "Input should be an object"}
    ]


BODIES = [
    ("post", "/v1/messages"),
    ("post", "/v1/messages/batch"),
    ("post", "/v1/webhooks"),
    ("post", "/v1/channels"),
    ("post", "/v1/channels/test"),
    ("patch", "/v1/organization"),
]


@pytest.mark.parametrize(("method", "path"), BODIES)
@pytest.mark.parametrize("declared", ["text/plain", "application/x-www-form-urlencoded"])
async def test_a_body_declared_as_something_other_than_json_is_415(
    api: Api, method: str, path: str, declared: str
) -> None:
    client = api.client("boss")
    response = await client.request(
        method, path, content=b'{"a": 1}', headers={"content-type": declared}
    )
    problem = assert_problem(response, 415, "application/json", declared)
    assert "errors" not in problem
    unknown = await api.client().request(
        method, path, content=b"{}", headers={"content-type": declared}
    )
    assert_problem(unknown, 401)  # the token first, as ever


async def test_a_body_declared_as_json_or_undeclared_is_read_as_json_on_every_route(
    api: Api,
) -> None:
    """One rule wherever the body is read: the submit routes (which read it themselves) and
    the routes FastAPI reads alike."""
    api.team_channel()
    client = api.client("boss")
    declared = {"content-type": "application/merge-patch+json"}
    response = await client.patch("/v1/organization", content=b"{}", headers=declared)
    assert response.status_code == 200, response.text
    undeclared = await client.patch("/v1/organization", content=b'{"fallback": "hold"}')
    assert undeclared.status_code == 200, undeclared.text
    assert (await client.get("/v1/organization")).json()["fallback"] == "hold"
    submitted = await api.client("jane").post("/v1/messages", content=json.dumps(message()))
    assert submitted.status_code == 202, submitted.text
    hook = await client.post("/v1/webhooks", content=b'{"url": 5}')
    assert_problem(hook, 422, "body.url")  # read as JSON, then validated
    listed = await client.get("/v1/messages", headers={"content-type": "text/plain"})
    assert listed.status_code == 200, listed.text  # no body taken: nothing to refuse


async def test_every_operation_that_takes_a_body_refuses_one_declared_otherwise(
    api: Api,
) -> None:
    """Each operation with a request body in the OpenAPI document (not only those listed in
    BODIES) makes the check, after the token, before its path is looked up."""
    document = (await api.client().get("/openapi.json")).json()
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if "requestBody" not in operation:
                continue
            url = re.sub(r"\{[^}]+\}", "x", path)
            response = await api.client("boss").request(
                method, url, content=b"{}", headers={"content-type": "text/plain"}
            )
            assert_problem(response, 415, "application/json", "text/plain")
            unknown = await api.client().request(
                method, url, content=b"{}", headers={"content-type": "text/plain"}
            )
            assert_problem(unknown, 401)


async def test_the_415_is_documented_on_every_operation_that_takes_a_body(api: Api) -> None:
    document = (await api.client().get("/openapi.json")).json()
    operations = [
        (f"{method} {path}", operation)
        for path, item in document["paths"].items()
        for method, operation in item.items()
    ]
    with_body = {name for name, operation in operations if "requestBody" in operation}
    assert {f"{m} {p}" for m, p in BODIES} <= with_body
    for name, operation in operations:
        assert ("415" in operation["responses"]) == (name in with_body), name


@pytest.mark.parametrize(
    ("domain", "said"),
    [
        ("bad..test", "A domain cannot have two periods in a row."),
        ("xn--zz.test", "The domain is not valid IDNA"),
        ("-a.test", "A domain cannot have a hyphen at its start."),
        ("a@b.test", "not a valid domain name."),
    ],
)
async def test_a_domain_refused_is_told_as_a_domain(api: Api, domain: str, said: str) -> None:
    """Not as the made-up address it was checked as (`postmaster@bad..test`), nor in an
    address's words (`An email address cannot ...`, `after the @-sign`)."""
    body = {"name": "x", "host": "h.example.com", "scope": "domain", "domains": [domain]}
    response = await api.client("boss").post(
        "/v1/channels", json=body | {"owner": {"team": "sales"}}
    )
    detail = assert_problem(response, 422)["detail"]
    assert detail.startswith(f"domain {domain!r}: {said}"), detail
    assert "postmaster" not in detail and "email address" not in detail and "@-sign" not in detail


@pytest.mark.parametrize(
    ("owner", "loc", "said"),
    [
        (5, "body.owner", "Input should be an object"),
        ([1], "body.owner", "Input should be an object"),
        ({}, "body.owner", "give exactly one of user (an email or id) or team (a name)"),
        ({"user": "a@acme.test", "team": "sales"}, "body.owner", "give exactly one of user"),
        ({"user": 5}, "body.owner.user", "Input should be a valid string"),
        ({"team": "sales", "x": 1}, "body.owner.x", "Extra inputs are not permitted"),
    ],
)
async def test_a_channels_owner_error_is_located_in_the_apis_words(
    api: Api, owner: object, loc: str, said: str
) -> None:
    """Not by a union member's class name (`body.owner.UserOwnerIn.user`)."""
    body = {"name": "x", "host": "h.example.com", "scope": "domain", "owner": owner}
    response = await api.client("boss").post("/v1/channels", json=body)
    errors = assert_problem(response, 422)["errors"]
    assert len(errors) == 1 and errors[0]["loc"] == loc and said in errors[0]["message"], errors
