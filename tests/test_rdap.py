"""The rdap prober against loopback RDAP registries (tests/servers/rdap.py).

The registries are the one double here, as the Kubernetes API is: no registry can be reached
from this machine. Test TLDs are reserved ones (.test, .example, .alt, .invalid) and every
connection goes to 127.0.0.1 (or localhost, which resolves to it).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from ssl_exporter import config, prepare, rdap, rdapsettings
from ssl_exporter.probers.rdap import registrable_domain
from ssl_exporter.targets import TargetError
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import DAY, NOW
from tests.servers import rdap as registry_double

ROOT = Path(__file__).resolve().parent.parent


def ts(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


@pytest.fixture(autouse=True)
def _fresh_caches() -> None:
    prepare.PROCESS_CACHES.rdap.clear()


@pytest.fixture
async def registry(pki: PKI, tmp_path: Path) -> AsyncIterator[registry_double.Registry]:
    leaf = pki.inter.issue("rdap.test", dns=("localhost",), ips=("127.0.0.1",))
    cert, key = leaf.write(tmp_path, "rdap", (pki.inter,))
    async with registry_double.serve(registry_double.Registry(), str(cert), str(key)) as served:
        yield served


def write_config(tmp_path: Path, pki: PKI, registry: registry_double.Registry) -> Path:
    (tmp_path / "dns.json").write_text(json.dumps(registry.bootstrap))
    base = registry.base
    port = base.rsplit(":", 1)[1]
    common = f"tls_config: {{ca_file: {pki.root_file}}}"
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(f"""\
        default_module: domain
        modules:
          domain:
            prober: rdap
            timeout: 5s
            {common}
            rdap:
              bootstrap_file: dns.json
              servers: {{alt: "https://localhost:{port}/cctld/"}}
              expiry_override: {{fixed.invalid: 2030-01-02}}
          fresh:
            prober: rdap
            {common}
            rdap: {{bootstrap_file: dns.json, cache_ttl: 1ms, error_retry: 1ms}}
          slow:
            prober: rdap
            timeout: 1s
            {common}
            rdap: {{bootstrap_file: dns.json}}
          limited:
            prober: rdap
            {common}
            rdap: {{bootstrap_file: dns.json, host_concurrency: 1}}
          fetched:
            prober: rdap
            {common}
            rdap: {{bootstrap_url: "{base}/bootstrap.json"}}
          strict:
            prober: rdap
            rdap: {{bootstrap_file: dns.json}}
          walled:
            prober: rdap
            {common}
            rdap: {{bootstrap_file: dns.json}}
            target_policy: {{deny_cidrs: [127.0.0.0/8]}}
          by-name:
            prober: rdap
            {common}
            rdap: {{servers: {{test: "https://localhost:{port}/thick/"}}}}
            target_policy: {{deny_cidrs: [127.0.0.0/8, "::1/128"]}}
          dead:
            prober: rdap
            {common}
            rdap: {{servers: {{test: "https://127.0.0.1:1/"}}}}
          scoped:
            prober: rdap
            {common}
            rdap: {{bootstrap_file: dns.json}}
            target_policy: {{deny_hosts: ["*.test"]}}
        """))
    return path


@pytest.fixture
def config_path(tmp_path: Path, pki: PKI, registry: registry_double.Registry) -> Path:
    return write_config(tmp_path, pki, registry)


async def probe_domain(config_path: Path, target: str, module: str = "domain") -> Samples:
    async with serve_exporter(config_path) as client:
        return await probe(client, target, module=module)


# ---- registries' answers ----------------------------------------------------------------


async def test_thick_registry(config_path: Path, registry: registry_double.Registry) -> None:
    samples = await probe_domain(config_path, "www.shop.test")
    assert samples.get("ssl_probe_success") == 1
    assert samples.get("ssl_domain_info", domain="shop.test", source="rdap") == 1
    assert samples.get("ssl_domain_expiry_timestamp_seconds") == ts("2031-07-01T12:00:00+00:00")
    assert samples.get("ssl_domain_registration_timestamp_seconds") == ts("2002-07-01T12:00:00+00:00")
    assert {s["status"] for s in samples.series("ssl_domain_status_info")} == {
        "client transfer prohibited", "server delete prohibited"}
    assert samples.get("ssl_domain_registrar_info", registrar="Example Registrar, Inc.") == 1
    fetched = samples.get("ssl_domain_lookup_timestamp_seconds")
    assert fetched is not None and abs(fetched - time.time()) < 60
    assert samples.get("ssl_probe_phase_duration_seconds", phase="rdap") is not None
    assert samples.errors() == set()
    # The https:// server of the two the bootstrap registry lists, asked for RDAP JSON.
    assert registry.requests == ["/thick/domain/shop.test"]
    assert registry.accept[0].startswith("application/rdap+json")


async def test_thin_registry_refers_to_the_registrar(config_path: Path, registry: registry_double.Registry) -> None:
    samples = await probe_domain(config_path, "news.example")
    assert samples.get("ssl_probe_success") == 1
    # Expiry from the registrar; registration, statuses and registrar from the registry.
    assert samples.get("ssl_domain_expiry_timestamp_seconds") == ts("2028-09-14T04:00:00+00:00")
    assert samples.get("ssl_domain_registration_timestamp_seconds") == ts("1997-09-15T04:00:00+00:00")
    assert {s["status"] for s in samples.series("ssl_domain_status_info")} == {
        "client delete prohibited", "client transfer prohibited"}
    assert samples.series("ssl_domain_registrar_info") == [{"registrar": "Example Registrar, Inc."}]
    assert registry.requests == ["/thin/domain/news.example", "/registrar/domain/NEWS.EXAMPLE"]


async def test_cctld_with_extra_events_through_a_configured_server(config_path: Path,
                                                                   registry: registry_double.Registry) -> None:
    samples = await probe_domain(config_path, "https://www.verein.alt/path")
    assert samples.get("ssl_probe_success") == 1
    assert samples.get("ssl_domain_expiry_timestamp_seconds") == pytest.approx(ts("2027-03-05T08:11:12.345+00:00"))
    assert samples.get("ssl_domain_registration_timestamp_seconds") == pytest.approx(
        ts("2001-03-05T08:11:12.345+00:00"))
    assert samples.series("ssl_domain_status_info") == [{"status": "active"}]
    assert samples.series("ssl_domain_registrar_info") == [{"registrar": "REG-CCTLD-42"}]
    assert registry.requests == ["/cctld/domain/verein.alt"]


async def test_trouble_statuses_are_reported(config_path: Path) -> None:
    samples = await probe_domain(config_path, "hold.test")
    assert samples.get("ssl_probe_success") == 1
    assert {s["status"] for s in samples.series("ssl_domain_status_info")} == {"client hold", "redemption period"}


async def test_label_values_are_capped_and_escaped(config_path: Path, registry: registry_double.Registry) -> None:
    registry.answers["odd.test"] = registry_double.domain_object(
        "odd.test", [("expiration", "2030-01-01T00:00:00Z")],
        [f"status {i}" for i in range(100)] + ['say "hi"\nand ' + "x" * 500],
        entities=[{"objectClassName": "entity", "roles": ["registrar"],
                   "vcardArray": registry_double.vcard('Evil "Registrar"\\\n' + "y" * 1000)}])
    samples = await probe_domain(config_path, "odd.test")
    assert samples.get("ssl_probe_success") == 1
    statuses = [s["status"] for s in samples.series("ssl_domain_status_info")]
    assert len(statuses) == rdap.MAX_STATUSES
    [registrar] = [s["registrar"] for s in samples.series("ssl_domain_registrar_info")]
    assert registrar.startswith('Evil "Registrar"\\ yyy') and len(registrar) == rdap.MAX_LABEL


async def test_unprintable_and_surrogate_text_is_escaped(config_path: Path,
                                                          registry: registry_double.Registry) -> None:
    # JSON may carry a lone surrogate, NUL or ESC; as label values they made every scrape fail.
    registry.answers["ctrl.test"] = registry_double.domain_object(
        "ctrl.test", [("expiration", "2030-01-01T00:00:00Z")], ["active\ud800", "ok\x00\x1b[31m"],
        entities=[{"objectClassName": "entity", "roles": ["registrar"],
                   "vcardArray": registry_double.vcard("Bad\ud800 \x1b[2JRegistrar\x00")}])
    # A registry's referral (quoted in the notes) with ESC and a lone surrogate in its path.
    registry.answers["ctrl.example"] = registry_double.domain_object(
        "ctrl.example", [], ["active"],
        links=[{"rel": "related", "type": "application/rdap+json",
                "href": f"{registry.base}/registrar\x1b[2J\ud800/domain/ctrl.example"}])
    async with serve_exporter(config_path) as client:
        samples = await probe(client, "ctrl.test")
        for target in ("ctrl.test", "ctrl.example"):
            debug = await client.get("/probe", params={"target": target, "module": "domain", "debug": "true"})
            assert debug.status == 200
            text = await debug.text()
            assert "\x1b" not in text and "\ud800" not in text
        assert "/registrar\\x1b[2J\\ud800/domain/ctrl.example" in text
    assert samples.get("ssl_probe_success") == 1
    assert {s["status"] for s in samples.series("ssl_domain_status_info")} == {"active\\ud800",
                                                                              "ok\\x00\\x1b[31m"}
    assert samples.series("ssl_domain_registrar_info") == [{"registrar": "Bad\\ud800 \\x1b[2JRegistrar\\x00"}]
    failure = rdap.LookupFailed("bad_response", "server said \ud800\x00\x1b[2J")
    assert failure.detail == "server said \\ud800\\x00\\x1b[2J"
    failure.detail.encode("utf-8")


async def test_expiry_override_is_reported_as_such(config_path: Path, registry: registry_double.Registry) -> None:
    samples = await probe_domain(config_path, "www.fixed.invalid")
    assert samples.get("ssl_probe_success") == 1
    assert samples.get("ssl_domain_info", domain="fixed.invalid", source="expiry_override") == 1
    assert samples.get("ssl_domain_expiry_timestamp_seconds") == ts("2030-01-02T00:00:00+00:00")
    assert samples.get("ssl_domain_lookup_timestamp_seconds") is None
    assert registry.requests == []


# ---- failures ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("missing.test", "not_found"),
        ("garbage.test", "bad_response"),
        ("huge.test", "oversized"),
        ("loop.test", "too_many_redirects"),
        ("nowhere.invalid", "no_rdap_service"),
        ("plain.example", "insecure_url"),  # the thin registry refers to an http:// URL
    ],
)
async def test_failures(config_path: Path, target: str, reason: str) -> None:
    samples = await probe_domain(config_path, target)
    assert samples.get("ssl_probe_success") == 0
    assert samples.errors() == {("rdap", reason)}
    assert samples.get("ssl_domain_expiry_timestamp_seconds") is None


async def test_redirect_loop_is_bounded(config_path: Path, registry: registry_double.Registry) -> None:
    await probe_domain(config_path, "loop.test")
    assert registry.requests == ["/thick/domain/loop.test", "/thick/domain/loop2.test"]


async def test_rate_limit_holds_back_the_host(config_path: Path, registry: registry_double.Registry) -> None:
    samples = await probe_domain(config_path, "busy.test")
    assert samples.errors() == {("rdap", "rate_limited")}
    # Another domain on the same host is not asked before Retry-After has passed ...
    samples = await probe_domain(config_path, "shop.test")
    assert samples.errors() == {("rdap", "rate_limited")}
    assert registry.requests == ["/thick/domain/busy.test"]
    # ... while another host (localhost, for .alt) is.
    samples = await probe_domain(config_path, "verein.alt")
    assert samples.get("ssl_probe_success") == 1


async def test_slow_answer_times_out_within_the_deadline(config_path: Path) -> None:
    begin = time.monotonic()
    samples = await probe_domain(config_path, "slow.test", module="slow")
    assert time.monotonic() - begin < 1 + 1
    assert samples.errors() == {("rdap", "timeout")}
    assert samples.get("ssl_probe_success") == 0


async def test_registry_not_listening(config_path: Path) -> None:
    samples = await probe_domain(config_path, "shop.test", module="dead")
    assert samples.errors() == {("rdap", "refused")}
    assert samples.get("ssl_probe_success") == 0


async def test_unknown_issuer_of_the_rdap_server(config_path: Path) -> None:
    samples = await probe_domain(config_path, "shop.test", module="strict")
    assert samples.errors() == {("rdap", "unknown_issuer")}


# ---- cache, back-off and concurrency --------------------------------------------------------


async def test_answers_are_cached_not_asked_per_scrape(config_path: Path, registry: registry_double.Registry) -> None:
    first = await probe_domain(config_path, "shop.test")
    second = await probe_domain(config_path, "www.shop.test")
    assert registry.count("shop.test") == 1
    assert second.get("ssl_domain_lookup_timestamp_seconds") == first.get("ssl_domain_lookup_timestamp_seconds")
    assert second.get("ssl_probe_success") == 1


async def test_failures_are_not_retried_per_scrape(config_path: Path, registry: registry_double.Registry) -> None:
    for _ in range(3):
        samples = await probe_domain(config_path, "missing.test")
        assert samples.errors() == {("rdap", "not_found")}
    assert registry.count("missing.test") == 1


async def test_last_good_answer_is_served_while_lookups_fail(config_path: Path,
                                                              registry: registry_double.Registry) -> None:
    good = await probe_domain(config_path, "shop.test", module="fresh")
    fetched = good.get("ssl_domain_lookup_timestamp_seconds")
    registry.answers["shop.test"] = 503
    stale = await probe_domain(config_path, "shop.test", module="fresh")  # the 1ms cache_ttl has passed
    assert registry.count("shop.test") == 2
    assert stale.errors() == {("rdap", "http_error")}
    assert stale.get("ssl_probe_success") == 0
    assert stale.get("ssl_domain_expiry_timestamp_seconds") == ts("2031-07-01T12:00:00+00:00")
    assert stale.get("ssl_domain_lookup_timestamp_seconds") == fetched  # its age shows


async def test_concurrent_probes_of_one_domain_share_a_lookup(config_path: Path,
                                                             registry: registry_double.Registry) -> None:
    async with serve_exporter(config_path) as client:
        probes = [asyncio.ensure_future(probe(client, "slow.test", module=m)) for m in ("limited", "fresh")]
        await asyncio.wait_for(registry.arrived.wait(), 5)
        registry.release.set()
        results = await asyncio.gather(*probes)
    assert all(r.get("ssl_probe_success") == 1 for r in results)
    assert registry.count("slow.test") == 1


async def test_requests_per_host_are_limited(config_path: Path, registry: registry_double.Registry) -> None:
    async with serve_exporter(config_path) as client:
        probes = [asyncio.ensure_future(probe(client, name, module="limited")) for name in ("gate1.test", "gate2.test")]
        await asyncio.wait_for(registry.arrived.wait(), 5)
        assert registry.in_flight == 1
        registry.release.set()
        results = await asyncio.gather(*probes)
    assert [r.get("ssl_probe_success") for r in results] == [1, 1]
    assert registry.max_in_flight == 1


async def test_bootstrap_registry_is_fetched_once(config_path: Path, registry: registry_double.Registry) -> None:
    for name in ("shop.test", "news.example"):
        samples = await probe_domain(config_path, name, module="fetched")
        assert samples.get("ssl_probe_success") == 1
    assert registry.count("/bootstrap.json") == 1


async def test_unreachable_bootstrap_registry(config_path: Path, registry: registry_double.Registry) -> None:
    registry.bootstrap = {"services": "not a list"}
    samples = await probe_domain(config_path, "shop.test", module="fetched")
    assert samples.errors() == {("rdap", "bootstrap_unavailable")}
    await probe_domain(config_path, "other.test", module="fetched")
    assert registry.count("/bootstrap.json") == 1  # retried after error_retry, not per scrape


# ---- target policy -------------------------------------------------------------------------


async def test_policy_refuses_an_rdap_server_address(config_path: Path, registry: registry_double.Registry) -> None:
    samples = await probe_domain(config_path, "shop.test", module="walled")
    assert samples.errors() == {("rdap", "refused_by_policy")}
    assert registry.requests == []


async def test_policy_checks_the_resolved_address(config_path: Path, registry: registry_double.Registry) -> None:
    samples = await probe_domain(config_path, "shop.test", module="by-name")
    assert samples.errors() == {("rdap", "refused_by_policy")}
    assert registry.requests == []


async def test_policy_refuses_the_target_domain(config_path: Path) -> None:
    async with serve_exporter(config_path) as client:
        response = await client.get("/probe", params={"target": "shop.test", "module": "scoped"})
        assert response.status == 403
        response = await client.get("/probe", params={"target": "verein.alt", "module": "scoped"})
        assert response.status == 200


async def test_answers_are_kept_apart_by_policy_trust_and_proxy(tmp_path: Path, pki: PKI,
                                                                 registry: registry_double.Registry) -> None:
    # Same rdap: block, different policy or trust: one module's refusal, TLS failure or data
    # was served to the other from the shared cache (and the shared bootstrap registry).
    from tests.servers.proxy import run_tinyproxy

    with run_tinyproxy("probe", "s3cret") as proxy_port:
        block = f'{{bootstrap_url: "{registry.base}/bootstrap.json"}}'
        proxied = f'{{bootstrap_url: "{registry.base}/bootstrap.json", proxy_url: "http://probe:wrong@127.0.0.1:{proxy_port}"}}'
        path = tmp_path / "scoped.yml"
        path.write_text(textwrap.dedent(f"""\
            modules:
              walled:
                prober: rdap
                tls_config: {{ca_file: {pki.root_file}}}
                rdap: {block}
                target_policy: {{deny_cidrs: [127.0.0.0/8]}}
              open:
                prober: rdap
                tls_config: {{ca_file: {pki.root_file}}}
                rdap: {block}
              untrusting:
                prober: rdap
                rdap: {block}
              proxied:
                prober: rdap
                tls_config: {{ca_file: {pki.root_file}}}
                rdap: {proxied}
            """))
        async with serve_exporter(path) as client:
            walled = await probe(client, "shop.test", module="walled")
            opened = await probe(client, "shop.test", module="open")
            untrusting = await probe(client, "shop.test", module="untrusting")
            proxied_result = await probe(client, "shop.test", module="proxied")
            walled_again = await probe(client, "shop.test", module="walled")
    assert walled.errors() == {("rdap", "bootstrap_unavailable")}  # the policy refused the bootstrap URL
    assert opened.get("ssl_probe_success") == 1
    assert opened.get("ssl_domain_expiry_timestamp_seconds") == ts("2031-07-01T12:00:00+00:00")
    assert untrusting.get("ssl_probe_success") == 0
    assert untrusting.get("ssl_domain_expiry_timestamp_seconds") is None
    assert proxied_result.errors() == {("rdap", "bootstrap_unavailable")}
    assert walled_again.errors() == {("rdap", "bootstrap_unavailable")}
    assert walled_again.get("ssl_domain_expiry_timestamp_seconds") is None
    # One bootstrap fetch and one domain lookup reached the registry: the open module's.
    assert registry.requests == ["/bootstrap.json", "/thick/domain/shop.test"]


# ---- input, config and the pieces ------------------------------------------------------------


@pytest.mark.parametrize("target", ["test", "127.0.0.1", "[::1]:443", "bad name.test", ""])
async def test_bad_targets_are_400(config_path: Path, target: str) -> None:
    async with serve_exporter(config_path) as client:
        response = await client.get("/probe", params={"target": target, "module": "domain"})
        assert response.status == 400
        assert "\n" not in (await response.text()).strip()


async def test_a_long_target_is_clipped_in_the_answer(config_path: Path) -> None:
    target = "https://co.uk/" + "x" * 5000  # a public suffix: the target is echoed in the error
    async with serve_exporter(config_path) as client:
        response = await client.get("/probe", params={"target": target, "module": "domain"})
        text = await response.text()
    assert response.status == 400
    assert "is a public suffix" in text and f"({len(target)} characters)" in text
    assert len(text) < 500


def test_registrable_domain_uses_the_public_suffix_list() -> None:
    # Pure name arithmetic: nothing is resolved.
    assert registrable_domain("www.example.co.uk") == "example.co.uk"
    assert registrable_domain("https://a.b.example.test:8443/x") == "example.test"
    assert registrable_domain("user.github.io") == "github.io"  # private suffixes are not registries
    with pytest.raises(TargetError, match="public suffix"):
        registrable_domain("co.uk")


def test_bootstrap_longest_match_and_https_preference() -> None:
    registry = rdapsettings.parse_bootstrap(json.dumps({"services": [
        [["uk"], ["https://uk.rdap.test/"]], [["co.uk", "ORG.UK"], ["https://couk.rdap.test/"]]]}))
    assert registry.lookup("example.co.uk") == ("co.uk", ("https://couk.rdap.test/",))
    assert registry.lookup("example.org.uk") == ("org.uk", ("https://couk.rdap.test/",))
    assert registry.lookup("example.uk") == ("uk", ("https://uk.rdap.test/",))
    assert registry.lookup("example.test") is None
    with pytest.raises(ValueError, match="services"):
        rdapsettings.parse_bootstrap(b'{"version": "1.0"}')


def test_retry_after_forms() -> None:
    now = 1_700_000_000.0
    assert rdap.retry_after("120", now) == 120
    assert rdap.retry_after("99999999999", now) == rdap.MAX_RETRY_AFTER
    assert rdap.retry_after("Tue, 14 Nov 2023 22:14:20 GMT", now) == pytest.approx(1_700_000_060 - now)
    assert rdap.retry_after("soon", now) is None


def test_rfc3339_dates() -> None:
    assert rdap.parse_time("2031-07-01T12:00:00Z") == ts("2031-07-01T12:00:00+00:00")
    assert rdap.parse_time("2031-07-01T14:00:00.5+02:00") == ts("2031-07-01T12:00:00.5+00:00")
    for bad in ("", "yesterday", "2031-13-01T00:00:00Z", 20310701, "9" * 100):
        assert rdap.parse_time(bad) is None


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ("{servers: {test: 'http://127.0.0.1:1/'}}", "modules.d.rdap.servers.test: 'http://127.0.0.1:1/' is not an "
                                                       "https:// URL (allow_http is off)"),
        ("{expiry_override: {a.test: soon}}", "modules.d.rdap.expiry_override.a.test: expected a date like 2031-05-01"),
        ("{cache: 1h}", "modules.d.rdap.cache: unknown key"),
        ("{cache_ttl: 0s}", "modules.d.rdap.cache_ttl: must be greater than 0"),
        ("{host_concurrency: 0}", "modules.d.rdap.host_concurrency: must be at least 1"),
        ("{bootstrap_file: nothing.json}", "modules.d.rdap.bootstrap_file: cannot read"),
        ("{proxy_url: 'socks5://127.0.0.1:1'}", "modules.d.rdap.proxy_url: scheme 'socks5' is not supported"),
    ],
)
def test_config_errors(block: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(config.ConfigError) as error:
        prepare.load_text(f"modules: {{d: {{prober: rdap, rdap: {block}}}}}", "test", str(tmp_path))
    assert str(error.value).startswith(message)


async def test_credentials_in_rdap_urls_are_redacted(tmp_path: Path, pki: PKI,
                                                     registry: registry_double.Registry) -> None:
    port = registry.base.rsplit(":", 1)[1]
    path = tmp_path / "secret.yml"
    path.write_text(textwrap.dedent(f"""\
        modules:
          d:
            prober: rdap
            tls_config: {{ca_file: {pki.root_file}}}
            rdap:
              bootstrap_url: "https://t0ken@localhost:{port}/bootstrap.json"
              servers: {{test: "https://reg:s3cret@localhost:{port}/thick/"}}
        """))
    shown = prepare.load_file(str(path)).redacted()["modules"]["d"]["rdap"]
    assert shown["bootstrap_url"] == f"https://<secret>@localhost:{port}/bootstrap.json"
    assert shown["servers"] == {"test": f"https://reg:<secret>@localhost:{port}/thick/"}
    async with serve_exporter(path) as client:
        page = await (await client.get("/config")).text()
        debug = await client.get("/probe", params={"target": "shop.test", "module": "d", "debug": "true"})
        text = await debug.text()
    assert "reg:<secret>@localhost" in page
    assert "s3cret" not in page and "t0ken" not in page
    assert "ssl_probe_success 1" in text
    assert "s3cret" not in text and "t0ken" not in text


def test_a_bootstrap_file_that_is_a_fifo_is_refused_at_once(tmp_path: Path) -> None:
    # A FIFO there held the load, and every later reload, for good.
    from tests.conftest import call_beside_fifo

    fifo = tmp_path / "dns.json"
    os.mkfifo(fifo)
    text = "modules: {d: {prober: rdap, rdap: {bootstrap_file: dns.json}}}"
    with pytest.raises(config.ConfigError) as error:
        call_beside_fifo(fifo, config.load_text, text, "test", str(tmp_path))
    assert str(error.value) == f"modules.d.rdap.bootstrap_file: cannot read {fifo}: not a regular file"


def test_embedded_default_has_a_domain_module() -> None:
    module = prepare.load_default().modules["domain"]
    assert module.prober == "rdap"
    assert module.rdap.bootstrap_url == rdapsettings.IANA_BOOTSTRAP_URL
    assert config.module_dict(module)["rdap"]["cache_ttl"] == "21600s"


# ---- the Nagios face -------------------------------------------------------------------------


async def test_check_command_reports_the_domain(config_path: Path, registry: registry_double.Registry) -> None:
    registry.answers["soon.test"] = registry_double.domain_object(
        "soon.test", [("expiration", datetime.fromtimestamp((NOW + 20 * DAY).timestamp(), UTC).isoformat())],
        ["active"])
    registry.answers["gone.test"] = registry_double.domain_object(
        "gone.test", [("expiration", "2031-01-01T00:00:00Z")], ["client hold"])
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def check(target: str) -> tuple[int, str]:
        # A process of its own; the registry answers from this test's event loop meanwhile.
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ssl_exporter", "check", "--module", "domain", "-w", "30", "-c", "7",
            f"--config.file={config_path}", target, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode is not None
        return process.returncode, out.decode() + err.decode()

    code, out = await check("www.soon.test")
    assert code == 1, out
    assert out.startswith("DOMAIN WARNING - soon.test: domain registration expires in 19d ")
    code, out = await check("gone.test")
    assert code == 2, out
    assert out.startswith("DOMAIN CRITICAL - gone.test: status client hold;")
    code, out = await check("missing.test")
    assert code == 2, out
    assert out.startswith("DOMAIN CRITICAL - missing.test: rdap/not_found")


async def test_check_takes_ca_file_for_the_rdap_servers(tmp_path: Path, pki: PKI,
                                                       registry: registry_double.Registry) -> None:
    # --ca-file was refused for rdap modules ("probes certificates at rest"), though their
    # tls_config is the RDAP servers' trust store.
    path = tmp_path / "untrusting.yml"
    path.write_text(textwrap.dedent(f"""\
        modules:
          domain:
            prober: rdap
            rdap: {{servers: {{test: "{registry.base}/thick/"}}}}
        """))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def check(*extra: str) -> tuple[int, str]:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "ssl_exporter", "check", "--module", "domain", f"--config.file={path}",
            *extra, "shop.test", env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(process.communicate(), 30)
        assert process.returncode is not None
        return process.returncode, out.decode() + err.decode()

    code, out = await check()
    assert code == 2 and "rdap/unknown_issuer" in out, out  # the private CA is not the system's
    code, out = await check("--ca-file", str(pki.root_file))
    assert code == 0, out
    assert out.startswith("DOMAIN OK - shop.test: domain registration expires in ")
    assert registry.requests == ["/thick/domain/shop.test"]


# ---- through a proxy -------------------------------------------------------------------------


async def test_lookups_go_through_proxy_url(tmp_path: Path, pki: PKI, registry: registry_double.Registry) -> None:
    from tests.servers.proxy import run_tinyproxy

    with run_tinyproxy("probe", "s3cret") as port:
        path = tmp_path / "proxied.yml"
        path.write_text(textwrap.dedent(f"""\
            modules:
              good:
                prober: rdap
                tls_config: {{ca_file: {pki.root_file}}}
                rdap: {{servers: {{test: "{registry.base}/thick/"}}, proxy_url: "http://probe:s3cret@127.0.0.1:{port}"}}
              wrong:
                prober: rdap
                tls_config: {{ca_file: {pki.root_file}}}
                rdap: {{servers: {{test: "{registry.base}/thick/"}}, proxy_url: "http://probe:wrong@127.0.0.1:{port}"}}
            """))
        async with serve_exporter(path) as client:
            good = await probe(client, "shop.test", module="good")
            wrong = await probe(client, "other.test", module="wrong")
            shown = await (await client.get("/config")).text()
    assert good.get("ssl_probe_success") == 1
    assert good.get("ssl_domain_expiry_timestamp_seconds") == ts("2031-07-01T12:00:00+00:00")
    # The proxy refused the wrong password (407): the request never reached the registry.
    assert wrong.errors() == {("rdap", "proxy_error")}
    assert registry.requests == ["/thick/domain/shop.test"]
    assert "s3cret" not in shown and "http://probe:<secret>@127.0.0.1" in shown
