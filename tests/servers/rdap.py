"""A stand-in for RDAP registries and registrars: HTTPS on loopback, RFC 9083 answers.

No registry can be reached from here, so this serves domain objects shaped like real
registries' answers, under reserved test TLDs:

- ``/thin/``: a thin registry (as .com and .net were): events without the expiration, and a
  ``related`` link to the registrar's RDAP server (``/registrar/``), which has it;
- ``/thick/``: a thick registry (as .org): every event, the statuses and the registrar;
- ``/cctld/``: a ccTLD registry with extra events (transfer, reregistration, last changed),
  dates with fractional seconds and UTC offsets, and a registrar named by handle only.

Special domain names (their first label) on any of them answer the failures a real server
gives: ``missing`` 404, ``busy`` 429 with Retry-After, ``slow`` an answer only when released,
``garbage`` malformed JSON, ``huge`` a body over a mebibyte without Content-Length, ``loop`` a
redirect loop, ``gate*`` an answer held until released (to observe concurrency). Every request
is recorded.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from tests.servers.https_app import serve_https

RETRY_AFTER = 120


def vcard(name: str) -> list[Any]:
    return ["vcard", [["version", {}, "text", "4.0"], ["fn", {}, "text", name]]]


def domain_object(name: str, events: list[tuple[str, str]], status: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "objectClassName": "domain",
        "rdapConformance": ["rdap_level_0", "icann_rdap_response_profile_0",
                            "icann_rdap_technical_implementation_guide_0"],
        "handle": f"{name.upper().replace('.', '_')}-TEST",
        "ldhName": name.upper(),  # registries answer in upper case, as Verisign does
        "events": [{"eventAction": action, "eventDate": date} for action, date in events],
        "status": status,
        "nameservers": [{"objectClassName": "nameserver", "ldhName": "NS1.EXAMPLE.NET"}],
        "secureDNS": {"delegationSigned": False},
        "notices": [{"title": "Terms of Use", "description": ["Service subject to terms of use."]}],
        **extra,
    }


@dataclass
class Registry:
    """The registries' data and behaviour; tests change ``answers`` and read ``requests``."""

    base: str = ""  # https://127.0.0.1:PORT, set when serving
    requests: list[str] = field(default_factory=list)
    accept: list[str] = field(default_factory=list)
    answers: dict[str, Any] = field(default_factory=dict)  # domain -> document, status or "redirect:URL"
    release: asyncio.Event = field(default_factory=asyncio.Event)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    in_flight: int = 0
    max_in_flight: int = 0
    bootstrap: dict[str, Any] = field(default_factory=dict)

    def count(self, fragment: str) -> int:
        return sum(fragment in path for path in self.requests)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(request.path_qs)
        self.accept.append(request.headers.get("Accept", ""))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.StreamResponse:
        kind = request.match_info["kind"]
        name = request.match_info["name"].lower()
        first = name.split(".")[0]
        if name in self.answers:
            answer = self.answers[name]
            if isinstance(answer, int):
                return web.json_response(_error(answer), status=answer)
            return web.json_response(answer, content_type="application/rdap+json")
        if first == "missing":
            return web.json_response(_error(404), status=404, content_type="application/rdap+json")
        if first == "busy":
            return web.json_response(_error(429), status=429, headers={"Retry-After": str(RETRY_AFTER)})
        if first in ("slow", "gate1", "gate2"):
            self.arrived.set()
            await asyncio.wait_for(self.release.wait(), 30)
        if first == "garbage":
            return web.Response(text='{"objectClassName": "domain", "events": [', content_type="application/rdap+json")
        if first == "huge":
            response = web.StreamResponse(headers={"Content-Type": "application/rdap+json"})
            response.enable_chunked_encoding()
            await response.prepare(request)
            await response.write(b'{"objectClassName": "domain", "remarks": "')
            for _ in range(40):
                await response.write(b"x" * 65536)
            await response.write(b'"}')
            await response.write_eof()
            return response
        if first in ("loop", "loop2"):
            raise web.HTTPFound(f"/{kind}/domain/loop2.{name.split('.', 1)[1]}" if name.startswith("loop.")
                                else f"/{kind}/domain/{name.replace('loop2', 'loop')}")
        return web.json_response(self.document(kind, name), content_type="application/rdap+json")

    def document(self, kind: str, name: str) -> dict[str, Any]:
        registrar = {"objectClassName": "entity", "handle": "1234", "roles": ["registrar"],
                     "publicIds": [{"type": "IANA Registrar ID", "identifier": "1234"}],
                     "vcardArray": vcard("Example Registrar, Inc.")}
        if kind == "thin":
            referral = f"{self.base}/registrar/domain/{name.upper()}"
            if name.startswith("plain."):
                referral = referral.replace("https://", "http://")
            return domain_object(name, [("registration", "1997-09-15T04:00:00Z"),
                                        ("last changed", "2024-09-09T15:39:04Z"),
                                        ("last update of RDAP database", "2026-01-01T00:00:00Z")],
                                 ["client delete prohibited", "client transfer prohibited"],
                                 entities=[registrar],
                                 links=[{"value": f"{self.base}/thin/domain/{name}", "rel": "self",
                                         "href": f"{self.base}/thin/domain/{name}", "type": "application/rdap+json"},
                                        {"value": f"{self.base}/thin/domain/{name}", "rel": "related",
                                         "href": referral, "type": "application/rdap+json"}])
        if kind == "registrar":
            return domain_object(name, [("registration", "1997-09-15T07:00:00Z"),
                                        ("expiration", "2028-09-14T04:00:00Z")],
                                 ["client transfer prohibited"],
                                 entities=[{**registrar, "vcardArray": vcard("Registrar of Record LLC")}])
        if kind == "cctld":
            return domain_object(name, [("registration", "2001-03-05T10:11:12.345+02:00"),
                                        ("transfer", "2015-06-01T00:00:00Z"),
                                        ("reregistration", "2016-01-01T00:00:00Z"),
                                        ("last changed", "2025-02-03T04:05:06.789Z"),
                                        ("expiration", "2027-03-05T10:11:12.345+02:00")],
                                 ["active"],
                                 entities=[{"objectClassName": "entity", "handle": "REG-CCTLD-42",
                                            "roles": ["registrar"]}])
        statuses = ["client hold", "redemption period"] if name.split(".")[0] == "hold" else \
            ["client transfer prohibited", "server delete prohibited"]
        return domain_object(name, [("registration", "2002-07-01T12:00:00Z"),
                                    ("expiration", "2031-07-01T12:00:00Z"),
                                    ("last changed", "2025-06-12T08:30:00Z")],
                             statuses, entities=[registrar])

    async def serve_bootstrap(self, request: web.Request) -> web.Response:
        self.requests.append(request.path)
        return web.json_response(self.bootstrap)


def _error(code: int) -> dict[str, Any]:
    titles = {404: "Not Found", 429: "Too Many Requests"}
    return {"rdapConformance": ["rdap_level_0"], "errorCode": code, "title": titles.get(code, "Error")}


def bootstrap(base: str) -> dict[str, Any]:
    """An RFC 9224 registry pointing the test TLDs at this server."""
    return {"version": "1.0", "publication": "2026-01-01T00:00:00Z", "description": "test bootstrap",
            "services": [[["test"], ["http://127.0.0.1:1/thick/", f"{base}/thick/"]],
                         [["example"], [f"{base}/thin/"]]]}


@asynccontextmanager
async def serve(registry: Registry, cert: str, key: str) -> AsyncIterator[Registry]:
    app = web.Application()
    app.router.add_get("/bootstrap.json", registry.serve_bootstrap)
    app.router.add_get("/{kind}/domain/{name}", registry.handle)
    async with serve_https(app, cert, key) as port:
        registry.base = f"https://127.0.0.1:{port}"
        registry.bootstrap = bootstrap(registry.base)
        try:
            yield registry
        finally:
            registry.release.set()


@contextmanager
def serve_in_thread(cert: str, key: str) -> Iterator[Registry]:
    """The registry on an event loop of its own, for tests whose exporter is a process."""
    loop = asyncio.new_event_loop()
    started = threading.Event()
    holder: dict[str, Any] = {}

    async def main() -> None:
        holder["stop"] = asyncio.Event()
        async with serve(Registry(), cert, key) as registry:
            holder["registry"] = registry
            started.set()
            await holder["stop"].wait()

    thread = threading.Thread(target=loop.run_until_complete, args=(main(),), daemon=True)
    thread.start()
    try:
        if not started.wait(20) or "registry" not in holder:
            raise RuntimeError("the RDAP registry double did not start")
        yield holder["registry"]
    finally:
        if "stop" in holder:
            loop.call_soon_threadsafe(holder["stop"].set)
        thread.join(20)
        loop.close()
