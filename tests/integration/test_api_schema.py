"""The API against its own OpenAPI document: for every operation, schemathesis generates
requests that fit the document and requests that do not, and sends them with an admin's
token to the real app over the real SQLite store. No response may be a 5xx; each must be a
documented status with the documented content type, headers and body; and a request that
does not fit the document must be refused.

(schemathesis' own pytest plugin does not run under pytest 9, so the operations are walked
here, one hypothesis run per operation and generation mode.)"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import Case, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.config import SchemathesisConfig
from schemathesis.schemas import BaseSchema
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from mailvia.ingress.api.intake import composed
from mailvia.ingress.api.schemas import MessageIn
from mailvia.outbox.records import MessageFilter
from mailvia.outbox.submit import Submission
from support.api import Api, message
from support.world import World

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    negative_data_rejection,
]
EXAMPLES = 20
# schemathesis' own list of the answers that count as refusing a request that does not fit.
REFUSALS = ["400", "401", "403", "404", "405", "406", "409", "415", "422", "428", "429", "5xx"]


@pytest.fixture
def api(tmp_path: Path) -> Iterator[Api]:
    # About a thousand requests with one token: more than the default rate limit allows.
    api = Api(World(tmp_path / "data", api_rate_limit="100000/60"))
    api.jane_channel()
    api.team_channel()
    # Something to read: a message of the admin's (sent through the team channel).
    services, boss = api.world.services, api.world.admin
    body = MessageIn.model_validate(message(**{"from": "boss@acme.test"}))
    services.submitter.submit(boss, [Submission(composed(services, boss, body, 0.0))], now=0.0)
    yield api
    asyncio.run(api.aclose())


def load(api: Api) -> BaseSchema:
    # The token is sent with every request, so generation leaves the security scheme alone.
    # A batch over its documented size is refused with 413 before its items are read (the
    # size rule is the request limiter's, issue 10), which schemathesis counts as a refusal
    # only when told.
    rejected = [*REFUSALS, "413"]
    config = SchemathesisConfig.from_dict(
        {
            "generation": {"with-security-parameters": False},
            "checks": {"negative_data_rejection": {"expected-statuses": rejected}},
        }
    )
    return schemathesis.openapi.from_asgi("/openapi.json", api.app, config=config)


def auth(api: Api, user: str = "boss") -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[user]}"}


def test_the_api_answers_as_its_openapi_document_says(api: Api) -> None:
    schema = load(api)
    headers = auth(api)
    failures: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 30
    for operation in operations:
        for mode in GenerationMode:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Case) -> None:
                case.call_and_validate(headers=headers, checks=CHECKS)

            try:
                check()
            except Unsatisfiable:  # nothing to get wrong: no parameters and no body
                assert mode is GenerationMode.NEGATIVE
            except Exception as exc:  # collect every operation's failure, then report
                failures.append(f"{mode} {operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)


def test_successful_answers_match_the_document_too(api: Api) -> None:
    """Random ids rarely exist: walk the happy paths with real ones."""
    schema = load(api)
    boss = auth(api)
    message_id = api.world.store.list_messages(
        MessageFilter(organization_id=api.world.admin.organization_id)
    )[0][0].id
    relay = "acme-relay"
    hook_url = "http://127.0.0.1:9/hook"
    webhooks = api.world.services.webhooks
    assert webhooks is not None
    hook = webhooks.add(api.world.admin, hook_url, None, time.time()).webhook.id
    new_channel = {"name": "new", "host": "smtp.acme.test", "username": "u", "password": "p"}
    mine = message(**{"from": "boss@acme.test"})
    batch = {"messages": [mine, message(subject="x\r\ny")]}
    google: dict[str, Any] = {"path_parameters": {"provider": "google"}}
    app = {"client_id": "app.apps.googleusercontent.com", "client_secret": "s3cret"}
    calls: list[tuple[str, str, dict[str, Any], int]] = [
        ("GET", "/healthz", {}, 200),
        ("GET", "/v1/messages", {"query": {"limit": 1}}, 200),
        ("GET", "/v1/messages/{id}", {"path_parameters": {"id": message_id}}, 200),
        ("POST", "/v1/messages/{id}/cancel", {"path_parameters": {"id": message_id}}, 200),
        ("POST", "/v1/messages", {"body": mine, "headers": {"Idempotency-Key": "k"}}, 202),
        ("POST", "/v1/messages", {"body": mine, "headers": {"Idempotency-Key": "k"}}, 200),
        ("POST", "/v1/messages/batch", {"body": batch}, 200),
        ("GET", "/v1/route", {"query": {"from": "boss@acme.test"}}, 200),
        ("GET", "/v1/channels", {}, 200),
        ("POST", "/v1/channels", {"body": new_channel}, 201),
        ("GET", "/v1/channels/{id}", {"path_parameters": {"id": relay}}, 200),
        ("PATCH", "/v1/channels/{id}", {"path_parameters": {"id": relay}, "body": {}}, 200),
        ("POST", "/v1/channels/{id}/pause", {"path_parameters": {"id": relay}}, 200),
        ("POST", "/v1/channels/{id}/resume", {"path_parameters": {"id": relay}}, 200),
        ("POST", "/v1/channels/{id}/cancel-mail", {"path_parameters": {"id": relay}}, 200),
        ("DELETE", "/v1/channels/{id}", {"path_parameters": {"id": "new"}}, 204),
        ("GET", "/v1/presets", {}, 200),
        ("GET", "/v1/organization", {}, 200),
        ("PATCH", "/v1/organization", {"body": {"default_channel_id": relay}}, 200),
        ("GET", "/v1/events", {}, 200),
        ("GET", "/v1/webhooks", {}, 200),
        ("POST", "/v1/webhooks", {"body": {"url": hook_url, "events": ["message.held"]}}, 201),
        ("GET", "/v1/webhooks/{id}/deliveries", {"path_parameters": {"id": hook}}, 200),
        ("DELETE", "/v1/webhooks/{id}", {"path_parameters": {"id": hook}}, 204),
        ("PUT", "/v1/organization/oauth/{provider}", {**google, "body": app}, 200),
        ("GET", "/v1/organization/oauth/{provider}", google, 200),
        ("GET", "/v1/oauth/{provider}/start", {**google, "query": {"transport": "smtp"}}, 200),
        ("DELETE", "/v1/organization/oauth/{provider}", google, 204),
    ]
    for method, path, parts, status in calls:
        headers = {**boss, **parts.pop("headers", {})}
        case = schema[path][method].Case(**parts)
        response = case.call_and_validate(headers=headers, checks=CHECKS)
        assert response.status_code == status, (method, path, response.text)
