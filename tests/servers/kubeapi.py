"""A stand-in for the Kubernetes API server: HTTPS on loopback, recorded list answers.

No API server can run on this machine, so this serves SecretList pages in the shape the
real API returns (v1 SecretList with metadata.continue), and the 403 and 410 answers the
real one gives, and records every request so tests can assert the selectors sent.

As the real one does, it pages by the client's ``limit`` (hundreds of Secrets, a megabyte
or more per page) and sends each page in many network writes, alternately chunked and with
a Content-Length, so that a client reading only what has arrived so far is caught.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.servers.https_app import serve_https

WRITE_BYTES = 8192  # bytes per network write of a list answer


def secret(namespace: str, name: str, data: dict[str, bytes], type_: str = "kubernetes.io/tls") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": namespace, "resourceVersion": "1"},
        "type": type_,
        "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
    }


@dataclass
class FakeAPI:
    secrets: list[dict[str, Any]]
    token: str
    forbidden_namespaces: set[str] = field(default_factory=set)
    expire_continue_once: bool = False  # the first continue token answers 410 Gone
    # Secrets per page: the client's limit, as a real API server; tests set a small one to
    # exercise pagination with few Secrets.
    page_size: int | None = None
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    raw_page: bytes | None = None  # answer this body to every list instead (hostile answers)

    async def list_secrets(self, request: web.Request) -> web.StreamResponse:
        query = dict(request.query)
        self.requests.append((request.path, query))
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return _status(401, "Unauthorized")
        namespace = request.match_info.get("namespace")
        if namespace in self.forbidden_namespaces:
            return _status(403, f'secrets is forbidden: cannot list resource "secrets" in namespace "{namespace}"')
        if query.get("continue") and self.expire_continue_once:
            self.expire_continue_once = False
            return _status(410, "The provided continue parameter is too old")
        items = [s for s in self.secrets if _selected(s, namespace, query)]
        size = self.page_size or int(query.get("limit") or 500)
        start = int(query.get("continue") or 0)
        page = items[start : start + size]
        more = start + size < len(items)
        body = {"kind": "SecretList", "apiVersion": "v1",
                "metadata": {"resourceVersion": "42", **({"continue": str(start + size)} if more else {})},
                "items": page}
        data = self.raw_page if self.raw_page is not None else json.dumps(body).encode()
        return await _send_in_pieces(request, data, chunked=len(self.requests) % 2 == 1)


async def _send_in_pieces(request: web.Request, data: bytes, chunked: bool) -> web.StreamResponse:
    """``data`` in WRITE_BYTES writes, letting the loop run between them (the client may read
    each as it arrives): chunked, or with a Content-Length."""
    response = web.StreamResponse(headers={"Content-Type": "application/json"})
    if chunked:
        response.enable_chunked_encoding()
    else:
        response.content_length = len(data)
    await response.prepare(request)
    for offset in range(0, len(data), WRITE_BYTES):
        await response.write(data[offset : offset + WRITE_BYTES])
        await asyncio.sleep(0)  # not a wait for anything: lets this write leave before the next
    await response.write_eof()
    return response


def _selected(item: dict[str, Any], namespace: str | None, query: dict[str, str]) -> bool:
    """The server-side selectors the exporter uses: namespace, type, metadata.name, labels."""
    if namespace is not None and item["metadata"]["namespace"] != namespace:
        return False
    for clause in query.get("fieldSelector", "").split(","):
        key, _, value = clause.partition("=")
        if key == "type" and item["type"] != value:
            return False
        if key == "metadata.name" and item["metadata"]["name"] != value:
            return False
    return True


def _status(code: int, message: str) -> web.Response:
    return web.json_response({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                              "message": message, "code": code}, status=code)


@asynccontextmanager
async def serve(api: FakeAPI, cert: str, key: str) -> AsyncIterator[int]:
    app = web.Application()
    app.router.add_get("/api/v1/secrets", api.list_secrets)
    app.router.add_get("/api/v1/namespaces/{namespace}/secrets", api.list_secrets)
    async with serve_https(app, cert, key) as port:
        yield port
