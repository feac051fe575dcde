"""``GET /openapi.json``: a sound OpenAPI 3.1 document that matches what the server does.

The document is checked structurally (every route of the app documented, every ``$ref``
resolvable, every component a valid JSON Schema), with ``openapi-spec-validator`` when it is
installed, and live responses are validated against their documented schemas.
"""

from __future__ import annotations

import importlib.util
import re
from typing import Any

import pytest

from gateway.api.openapi import build_openapi
from gateway.app import ENDPOINTS

from .conftest import Gateway

pytestmark = pytest.mark.asyncio

jsonschema_rs = pytest.importorskip("jsonschema_rs")

METHODS = {"get", "put", "post", "delete", "patch", "head", "options", "trace"}


def refs(node: Any) -> list[str]:
    found: list[str] = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.append(value)
            else:
                found.extend(refs(value))
    elif isinstance(node, list):
        for item in node:
            found.extend(refs(item))
    return found


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        node = node[part]
    return node


def validator(doc: dict[str, Any], schema: dict[str, Any]) -> Any:
    root = {"$schema": "https://json-schema.org/draft/2020-12/schema", **schema, "components": doc["components"]}
    return jsonschema_rs.Draft202012Validator(root, validate_formats=True)


def response_schema(
    doc: dict[str, Any], path: str, method: str, status: str, media: str = "application/json"
) -> dict[str, Any]:
    response = doc["paths"][path][method]["responses"][status]
    if "$ref" in response:
        response = resolve(doc, response["$ref"])
    schema: dict[str, Any] = response["content"][media]["schema"]
    return schema


def check(doc: dict[str, Any], path: str, method: str, status: int, body: Any) -> None:
    responses = doc["paths"][path][method]["responses"]
    key = str(status) if str(status) in responses else "default"
    assert key in responses, (path, method, status)
    errors = [str(e) for e in validator(doc, response_schema(doc, path, method, key)).iter_errors(body)]
    assert not errors, (path, method, status, errors[:3])


async def test_the_document_is_served_without_a_token_and_is_structurally_sound(gw: Gateway) -> None:
    doc = await gw.json("GET", "/openapi.json")
    assert doc == build_openapi()
    assert doc["openapi"] == "3.1.0"
    assert doc["info"]["title"] and doc["info"]["version"]
    assert set(doc["components"]["securitySchemes"]) == {"bearer", "token_query"}

    for ref in refs(doc):
        resolve(doc, ref)  # KeyError if dangling
    for name, schema in doc["components"]["schemas"].items():
        assert jsonschema_rs.meta.is_valid(schema), name

    operation_ids = []
    for path, item in doc["paths"].items():
        templated = set(re.findall(r"{(\w+)}", path))
        declared_at_path = {p["name"] for p in item.get("parameters", []) if p["in"] == "path"}
        for method, op in item.items():
            if method not in METHODS:
                continue
            operation_ids.append(op["operationId"])
            declared = declared_at_path | {p["name"] for p in op.get("parameters", []) if p["in"] == "path"}
            assert declared == templated, (path, method)
            assert op["responses"], (path, method)
            for status, response in op["responses"].items():
                assert status == "default" or re.fullmatch(r"[1-5][0-9][0-9]", status), status
                assert response["description"]
    assert len(operation_ids) == len(set(operation_ids))

    if importlib.util.find_spec("openapi_spec_validator") is not None:  # pragma: no cover - optional
        from openapi_spec_validator import validate

        validate(doc)


async def test_every_rest_route_of_the_app_is_documented(gw: Gateway) -> None:
    doc = build_openapi()
    documented = {(path, method) for path, item in doc["paths"].items() for method in item if method in METHODS}
    served = set()
    for route in gw.app.router.routes():
        info = route.resource.get_info() if route.resource is not None else {}
        path = info.get("path") or info.get("formatter")
        if route.method in ("HEAD", "*") or path is None or path.endswith("/ws"):
            continue  # HEAD mirrors GET; * is the vendors' dispatch route; sockets are in x-websockets
        served.add((path, route.method.lower()))
    for _vendor, _adapter, method, path in gw.app[ENDPOINTS].routes():  # one dispatch route serves these
        served.add((re.sub(r"^/v1/vendors/[^/{]+/", "/v1/vendors/{vendor}/", path), method.lower()))
    assert served == documented
    assert set(doc["x-websockets"]) == {"/v1/agents/{id}/ws", "/v1/events/ws"}


async def test_live_responses_match_their_schemas(gw: Gateway) -> None:
    doc = build_openapi()
    await gw.ready("a1", "a2")
    sid = await gw.offer("a1", vendor="pbx", customer={"address": "+4930123", "name": "Kim"}, subject="hi")

    async def call(method: str, path: str, template: str, who: str | None, **kwargs: Any) -> Any:
        response = await gw.request(method, path, who, **kwargs)
        body = await response.json() if response.content_type == "application/json" else await response.text()
        check(doc, template, method.lower(), response.status, body)
        return body

    await call("GET", "/healthz", "/healthz", None)
    await call("GET", "/readyz", "/readyz", None)
    await call("GET", "/v1/agents", "/v1/agents", "supervisor")
    await call("GET", "/v1/agents", "/v1/agents", "a1")
    await call("GET", "/v1/agents", "/v1/agents", None)  # 401
    await call("GET", "/v1/agents/a1", "/v1/agents/{id}", "a1")
    await call("GET", "/v1/agents/a2", "/v1/agents/{id}", "a1")  # 403
    await call("GET", "/v1/agents/zz", "/v1/agents/{id}", "supervisor")  # 404
    await call(
        "PUT", "/v1/agents/a1/presence", "/v1/agents/{id}/presence", "a1", json={"state": "ready", "reason": None}
    )
    await call("PUT", "/v1/agents/a1/presence", "/v1/agents/{id}/presence", "a1", json={"state": 1})  # 400
    await call("GET", f"/v1/sessions/{sid}", "/v1/sessions/{id}", "a1")
    await call("POST", f"/v1/sessions/{sid}/accept", "/v1/sessions/{id}/accept", "a1")
    await call("POST", f"/v1/sessions/{sid}/accept", "/v1/sessions/{id}/accept", "a1")  # 409
    await call("POST", f"/v1/sessions/{sid}/focus", "/v1/sessions/{id}/focus", "a1")
    await call("POST", f"/v1/sessions/{sid}/note", "/v1/sessions/{id}/note", "a1", json={"text": "n"})
    await call(
        "POST",
        f"/v1/sessions/{sid}/confirm_account",
        "/v1/sessions/{id}/confirm_account",
        "a1",
        json={"account_id": "acct"},
    )
    await call("POST", f"/v1/sessions/{sid}/reset_account", "/v1/sessions/{id}/reset_account", "a1")
    await call("POST", f"/v1/sessions/{sid}/send", "/v1/sessions/{id}/send", "a1", json={"text": "hello"})
    await call("PUT", "/v1/agents/a1/focus", "/v1/agents/{id}/focus", "a1", json={"session_id": None})
    await call(
        "POST",
        f"/v1/sessions/{sid}/transfer",
        "/v1/sessions/{id}/transfer",
        "a1",
        json={"to_queue": "support", "mode": "consult"},
    )
    await call("POST", f"/v1/sessions/{sid}/end", "/v1/sessions/{id}/end", "a1")
    manual = await call("POST", "/v1/agents/a1/sessions", "/v1/agents/{id}/sessions", "a1", json={"label": "x"})
    await call("POST", f"/v1/sessions/{manual['id']}/decline", "/v1/sessions/{id}/decline", "a1")  # 409
    await call("POST", "/v1/agents/a3/sessions", "/v1/agents/{id}/sessions", "supervisor")  # 409 agent_offline
    await gw.advance(60)
    await call("GET", "/v1/reports/sessions", "/v1/reports/sessions", "supervisor")
    await call("GET", "/v1/reports/sessions?from=x", "/v1/reports/sessions", "supervisor")  # 400
    await call("GET", "/v1/agents", "/v1/agents", "supervisor")

    response = await gw.request("GET", "/v1/reports/sessions?format=csv", "supervisor")
    assert (
        response.status == 200
        and response.content_type in doc["paths"]["/v1/reports/sessions"]["get"]["responses"]["200"]["content"]
    )
    response = await gw.request("GET", "/metrics")
    assert response.content_type in doc["paths"]["/metrics"]["get"]["responses"]["200"]["content"]

    # the webhook's answers
    ok = await gw.webhook(
        {"event_id": "w1", "type": "offer", "channel": "email", "interaction_id": "m1", "agent_id": "a2"}
    )
    check(doc, "/v1/vendors/{vendor}/events", "post", ok.status, await ok.json())
    dup = await gw.webhook(
        {"event_id": "w1", "type": "offer", "channel": "email", "interaction_id": "m1", "agent_id": "a2"}
    )
    assert (await dup.json())["decision"] == "duplicate"
    check(doc, "/v1/vendors/{vendor}/events", "post", dup.status, await dup.json())
    rejected = await gw.webhook(
        {"event_id": "w2", "type": "offer", "channel": "chat", "interaction_id": "c1", "agent_id": "a3"}
    )
    assert rejected.status == 409
    check(doc, "/v1/vendors/{vendor}/events", "post", rejected.status, await rejected.json())
    bad = await gw.webhook({"event_id": "w3", "type": "offer", "interaction_id": "c2", "queue": "support"})
    check(doc, "/v1/vendors/{vendor}/events", "post", bad.status, await bad.json())
