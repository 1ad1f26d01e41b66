"""target_policy: 403 before any connection for refused targets, checked on resolved addresses."""

from __future__ import annotations

import socket
import textwrap
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient

from ssl_exporter import access, config, prepare
from ssl_exporter.targets import parse_target
from tests.conftest import PKI, Samples, serve_exporter
from tests.servers import pytls


@asynccontextmanager
async def exporter_client(tmp_path: Path, text: str) -> AsyncIterator[TestClient]:
    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(text))
    async with serve_exporter(path) as client:
        yield client


async def get(client: TestClient, **params: str) -> tuple[int, str]:
    response = await client.get("/probe", params=params)
    return response.status, await response.text()


class Recorder:
    """A listening socket that counts connections: a refused probe must make none."""

    def __init__(self) -> None:
        self.connections = 0

    def handle(self, conn: socket.socket) -> None:
        self.connections += 1


@pytest.fixture
def tls_port(pki: PKI) -> Callable[[], object]:
    leaf = pki.inter.issue("localhost", dns=("localhost",), ips=("127.0.0.1", "::1"))
    cert, key = pki.chain_files("access", leaf, pki.inter)
    return lambda: pytls.tls_server(cert, key)


async def test_a_name_that_resolves_into_a_denied_range_is_403_and_never_connected(tmp_path: Path) -> None:
    recorder = Recorder()
    with pytls.serve(recorder.handle) as port:
        async with exporter_client(tmp_path, """\
                target_policy: {deny_cidrs: [127.0.0.0/8, "::1/128"]}
                modules:
                  tcp: {prober: tcp, timeout: 2s}
                """) as client:
            status, text = await get(client, target=f"localhost:{port}")
            own = Samples(await (await client.get("/metrics")).text())
    assert status == 403
    # The requester learns the rule, not the address the name resolved to.
    assert text == "target refused: target localhost resolves to an address that is in target_policy.deny_cidrs\n"
    assert recorder.connections == 0
    assert own.get("ssl_exporter_probes_refused_total", module="tcp", reason="address_denied") == 1
    assert own.get("ssl_exporter_probes_total", module="tcp", result="failure") is None  # not a probe
    assert own.get("ssl_exporter_probes_in_flight") == 0


async def test_the_refusal_is_logged_with_the_address(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    async with exporter_client(tmp_path, """\
            modules:
              tcp: {prober: tcp, target_policy: {deny_cidrs: [127.0.0.0/8, "::1/128"]}}
            """) as client:
        status, _ = await get(client, target="localhost:1")
    assert status == 403
    [record] = [r for r in caplog.records if r.getMessage() == "probe refused"]
    fields = record.fields  # type: ignore[attr-defined]
    assert (fields["target"], fields["module"], fields["reason"]) == ("localhost:1", "tcp", "address_denied")
    assert fields["err"] in ("target localhost: address 127.0.0.1 is in 127.0.0.0/8",
                             "target localhost: address ::1 is in ::1/128")


@pytest.mark.parametrize(
    ("target", "reason", "message"),
    [
        ("169.254.169.254:443", "link_local",
         "target 169.254.169.254 is link-local or a cloud metadata address (target_policy.deny_link_local)"),
        ("https://169.254.169.254/latest/meta-data", "link_local",
         "target 169.254.169.254 is link-local or a cloud metadata address (target_policy.deny_link_local)"),
        ("[fd00:ec2::254]:443", "link_local",
         "target fd00:ec2::254 is link-local or a cloud metadata address (target_policy.deny_link_local)"),
        ("100.100.100.200", "link_local",
         "target 100.100.100.200 is link-local or a cloud metadata address (target_policy.deny_link_local)"),
        ("[fe80::1]:443", "link_local",
         "target fe80::1 is link-local or a cloud metadata address (target_policy.deny_link_local)"),
        # An IPv4-mapped IPv6 address reaches the IPv4 address: it is checked as that.
        ("[::ffff:169.254.169.254]:443", "link_local",
         "target ::ffff:a9fe:a9fe is link-local or a cloud metadata address (target_policy.deny_link_local)"),
        ("10.1.2.3:443", "address_denied", "target 10.1.2.3 is in target_policy.deny_cidrs 10.0.0.0/8"),
        ("db.internal.example:443", "host_denied",
         "target db.internal.example matches target_policy.deny_hosts '*.internal.example'"),
        ("DB.Internal.Example.:443", "host_denied",
         "target db.internal.example matches target_policy.deny_hosts '*.internal.example'"),
    ],
)
async def test_denied_targets_are_403_before_any_probe(tmp_path: Path, target: str, reason: str,
                                                       message: str) -> None:
    async with exporter_client(tmp_path, """\
            target_policy:
              deny_link_local: true
              deny_cidrs: [10.0.0.0/8]
              deny_hosts: ["*.internal.example"]
            modules:
              tcp: {prober: tcp, timeout: 2s}
            """) as client:
        status, text = await get(client, target=target)
        own = Samples(await (await client.get("/metrics")).text())
    assert (status, text) == (403, f"target refused: {message}\n")
    assert own.get("ssl_exporter_probes_refused_total", module="tcp", reason=reason) == 1


async def test_allowed_targets_still_work(tmp_path: Path, pki: PKI, tls_port) -> None:
    with tls_port() as (port, _):
        async with exporter_client(tmp_path, f"""\
                target_policy:
                  deny_link_local: true
                  deny_cidrs: [10.0.0.0/8, 192.168.0.0/16]
                  deny_hosts: ["*.internal.example"]
                  allow_cidrs: [127.0.0.0/8, "::1/128"]
                  allow_hosts: [localhost, "*.example.test"]
                modules:
                  tcp:
                    prober: tcp
                    timeout: 5s
                    tls_config: {{ca_file: {pki.root_file}}}
                    target_policy: {{deny_hosts: [www.example.test]}}
                """) as client:
            for target in (f"localhost:{port}", f"127.0.0.1:{port}"):
                status, text = await get(client, target=target, hostname="localhost")
                assert status == 200, text
                assert Samples(text).get("ssl_probe_success") == 1
            # allow_hosts lists names; an address target passes by allow_cidrs, in the same block.
            status, text = await get(client, target="192.168.1.1:443")
            assert (status, text) == (403, "target refused: target 192.168.1.1 is in "
                                           "target_policy.deny_cidrs 192.168.0.0/16\n")
            status, text = await get(client, target="www.example.test:443")
            assert (status, text) == (403, "target refused: target www.example.test matches "
                                           "modules.tcp.target_policy.deny_hosts 'www.example.test'\n")


async def test_the_module_policy_adds_to_the_global_one(tmp_path: Path, tls_port) -> None:
    with tls_port() as (port, _):
        async with exporter_client(tmp_path, """\
                target_policy: {allow_cidrs: [127.0.0.0/8, "::1/128"]}
                modules:
                  open: {prober: tcp, timeout: 2s, tls_config: {insecure_skip_verify: true}}
                  narrow:
                    prober: tcp
                    timeout: 2s
                    target_policy: {allow_hosts: [localhost], deny_cidrs: [127.0.0.1/32]}
                  files: {prober: file}
                """) as client:
            # The global allow list binds every tcp module...
            assert await get(client, module="open", target="192.0.2.1:443") == (
                403, "target refused: target 192.0.2.1 is outside target_policy.allow_cidrs\n")
            assert (await get(client, module="open", target=f"127.0.0.1:{port}"))[0] == 200
            assert (await get(client, module="open", target=f"localhost:{port}"))[0] == 200
            # ... and a module's own block narrows it further; it cannot widen it.
            assert await get(client, module="narrow", target=f"127.0.0.1:{port}") == (
                403, "target refused: target 127.0.0.1 is an IP address and "
                     "modules.narrow.target_policy.allow_hosts lists names only\n")
            assert await get(client, module="narrow", target="www.example.test:443") == (
                403, "target refused: target www.example.test matches no modules.narrow.target_policy.allow_hosts\n")
            assert await get(client, module="narrow", target=f"localhost:{port}") == (
                403, "target refused: target localhost resolves to an address that is in "
                     "modules.narrow.target_policy.deny_cidrs\n")
            # A file module is not a network probe: target_policy does not concern it.
            assert (await get(client, module="files", target=str(tmp_path / "none.pem")))[0] == 200
            own = Samples(await (await client.get("/metrics")).text())
    assert own.get("ssl_exporter_probes_refused_total", module="open", reason="address_not_allowed") == 1
    assert own.get("ssl_exporter_probes_refused_total", module="narrow", reason="host_not_allowed") == 2
    assert own.get("ssl_exporter_probes_refused_total", module="narrow", reason="address_denied") == 1


def test_policy_layers_unit() -> None:
    cfg = prepare.load_text(textwrap.dedent("""\
        target_policy: {deny_link_local: true, allow_cidrs: [192.0.2.0/24, "2001:db8::/32"]}
        modules:
          a: {prober: tcp, target_policy: {deny_cidrs: [192.0.2.128/25]}}
          b: {prober: tcp}
          f: {prober: file}
        """), source="test")
    a, b = cfg.modules["a"].policy, cfg.modules["b"].policy
    assert a is not None and b is not None and cfg.modules["f"].policy is None
    target = parse_target("www.example.test:443", 443)
    a.check_addresses(target, ["192.0.2.1", "2001:db8::1"])
    with pytest.raises(access.TargetRefused) as refused:
        a.check_addresses(target, ["192.0.2.1", "192.0.2.200"])  # any address denied refuses the name
    assert refused.value.reason == "address_denied"
    b.check_addresses(target, ["192.0.2.200"])
    with pytest.raises(access.TargetRefused) as refused:
        b.check_addresses(target, ["fe80::1%eth0"])  # a scoped address
    assert refused.value.reason == "link_local"
    assert cfg.redacted()["target_policy"] == {"allow_cidrs": ["192.0.2.0/24", "2001:db8::/32"],
                                               "deny_link_local": True}
    assert cfg.redacted()["modules"]["a"]["target_policy"] == {"deny_cidrs": ["192.0.2.128/25"]}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("target_policy: [10.0.0.0/8]\nmodules: {t: {}}",
         "target_policy: expected a mapping, got list"),
        ("target_policy: {deny_cidr: [10.0.0.0/8]}\nmodules: {t: {}}",
         "target_policy.deny_cidr: unknown key (expected one of allow_cidrs, allow_hosts, deny_cidrs, "
         "deny_hosts, deny_link_local, except_cidrs)"),
        ("target_policy: {except_cidrs: [\"127.0.0.1:0\"]}\nmodules: {t: {}}",
         "target_policy.except_cidrs: '127.0.0.1:0': a port is a number from 1 to 65535, or a range like 8000-8999"),
        ("target_policy: {deny_cidrs: [\"10.0.0.0/8:9000-8000\"]}\nmodules: {t: {}}",
         "target_policy.deny_cidrs: '10.0.0.0/8:9000-8000': the port range 9000-8000 is empty"),
        ("target_policy: {deny_cidrs: [\"[::1:443\"]}\nmodules: {t: {}}",
         "target_policy.deny_cidrs: '[::1:443': write an IPv6 network with a port as [fd00::/8]:443"),
        ("target_policy: {allow_cidrs: [\"10.0.0.1/8:443\"]}\nmodules: {t: {}}",
         "target_policy.allow_cidrs: '10.0.0.1/8:443' is not a CIDR: 10.0.0.1/8 has host bits set"),
        ("target_policy: {deny_cidrs: [10.0.0.1/8]}\nmodules: {t: {}}",
         "target_policy.deny_cidrs: '10.0.0.1/8' is not a CIDR: 10.0.0.1/8 has host bits set"),
        ("target_policy: {deny_cidrs: 10.0.0.0/8}\nmodules: {t: {}}",
         "target_policy.deny_cidrs: expected a list of CIDRs like 10.0.0.0/8 or fd00::/8"),
        ("modules: {t: {target_policy: {allow_hosts: [\"bücher.example\"]}}}",
         "modules.t.target_policy.allow_hosts: 'bücher.example': write internationalised names in their "
         "ASCII (xn--) form"),
        ("modules: {t: {target_policy: {deny_link_local: 'yes'}}}",
         "modules.t.target_policy.deny_link_local: expected bool, got string"),
        ("modules: {f: {prober: file, target_policy: {}}}",
         "modules.f.target_policy: unknown key for prober file (expected one of ari, file, prober, timeout)"),
    ],
)
def test_bad_policies_are_config_errors(text: str, message: str) -> None:
    with pytest.raises(config.ConfigError) as caught:
        prepare.load_text(text, source="test")
    assert str(caught.value) == message


def _proxy(requests: list[bytes]) -> Callable[[socket.socket], None]:
    return pytls.http_proxy_answering(b"HTTP/1.1 403 Forbidden", requests)


async def test_through_a_proxy_names_are_left_to_the_proxy_addresses_are_checked(tmp_path: Path) -> None:
    requests: list[bytes] = []
    with pytls.serve(_proxy(requests)) as proxy_port:
        async with exporter_client(tmp_path, f"""\
                target_policy: {{deny_cidrs: [127.0.0.0/8, "::1/128"], deny_hosts: ["*.internal.example"]}}
                modules:
                  tcp: {{prober: tcp, timeout: 2s, tcp: {{proxy_url: "http://127.0.0.1:{proxy_port}"}}}}
                """) as client:
            # The proxy (on a denied address itself: it is the operator's) resolves the name.
            status, text = await get(client, target="localhost:443")
            assert status == 200
            assert Samples(text).errors() == {("connect", "proxy_error")}
            # An address target is checked, and a name glob applies whoever resolves.
            assert (await get(client, target="127.0.0.1:443"))[0] == 403
            assert (await get(client, target="x.internal.example:443"))[0] == 403
    assert len(requests) == 1 and requests[0].startswith(b"CONNECT localhost:443 ")


# --- the local host written as an unspecified or embedded address (issue 12, item 2) -------------

# The deny list docs/security.md shows.
DOCS_POLICY = """\
    target_policy:
      deny_link_local: true
      deny_cidrs: [10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, 127.0.0.0/8, "::1/128", fc00::/7]
    modules:
      tcp: {prober: tcp, timeout: 2s}
    """

UNSPECIFIED = "is unspecified (0.0.0.0/8 or ::), which connects to the local host"


@pytest.mark.parametrize(
    ("target", "reason", "message"),
    [
        # Linux connects 0.0.0.0 and :: to the local host, in every way of writing them.
        ("0.0.0.0:{port}", "unspecified_address", f"target 0.0.0.0 {UNSPECIFIED}"),
        ("0:{port}", "unspecified_address", f"target 0.0.0.0 {UNSPECIFIED}"),
        ("https://0.0.0.0:{port}/", "unspecified_address", f"target 0.0.0.0 {UNSPECIFIED}"),
        ("https://0:{port}/", "unspecified_address", f"target 0.0.0.0 {UNSPECIFIED}"),
        ("[::]:{port}", "unspecified_address", f"target :: {UNSPECIFIED}"),
        ("[::ffff:0.0.0.0]:{port}", "unspecified_address", f"target ::ffff:0:0 {UNSPECIFIED}"),
        ("[::0.0.0.0]:{port}", "unspecified_address", f"target :: {UNSPECIFIED}"),
        ("[64:ff9b::0.0.0.0]:{port}", "unspecified_address", f"target 64:ff9b:: {UNSPECIFIED}"),
        # A denied IPv4 address inside an IPv6 one, and the resolver's shorthand for it.
        ("[::ffff:127.0.0.1]:{port}", "address_denied",
         "target ::ffff:7f00:1 is in target_policy.deny_cidrs 127.0.0.0/8"),
        ("[::127.0.0.1]:{port}", "address_denied", "target ::7f00:1 is in target_policy.deny_cidrs 127.0.0.0/8"),
        ("[64:ff9b::127.0.0.1]:{port}", "address_denied",
         "target 64:ff9b::7f00:1 is in target_policy.deny_cidrs 127.0.0.0/8"),
        ("[::ffff:0:127.0.0.1]:{port}", "address_denied",
         "target ::ffff:0:7f00:1 is in target_policy.deny_cidrs 127.0.0.0/8"),
        ("[2002:7f00:1::]:{port}", "address_denied", "target 2002:7f00:1:: is in target_policy.deny_cidrs 127.0.0.0/8"),
        ("[64:ff9b::a9fe:a9fe]:{port}", "link_local",
         "target 64:ff9b::a9fe:a9fe is link-local or a cloud metadata address (target_policy.deny_link_local)"),
        ("127.1:{port}", "address_denied", "target 127.0.0.1 is in target_policy.deny_cidrs 127.0.0.0/8"),
        ("0x7f000001:{port}", "address_denied", "target 127.0.0.1 is in target_policy.deny_cidrs 127.0.0.0/8"),
    ],
)
async def test_the_local_host_in_every_form_is_refused_before_connecting(tmp_path: Path, target: str,
                                                                          reason: str, message: str) -> None:
    recorder = Recorder()
    with pytls.serve(recorder.handle) as port:
        async with exporter_client(tmp_path, DOCS_POLICY) as client:
            status, text = await get(client, target=target.format(port=port))
            own = Samples(await (await client.get("/metrics")).text())
    assert (status, text) == (403, f"target refused: {message}\n")
    assert own.get("ssl_exporter_probes_refused_total", module="tcp", reason=reason) == 1
    assert recorder.connections == 0


async def test_without_a_policy_0_reaches_the_local_host(tmp_path: Path) -> None:
    # Why the forms above matter: "0" is 0.0.0.0, which Linux connects to 127.0.0.1.
    recorder = Recorder()
    with pytls.serve(recorder.handle) as port:
        async with exporter_client(tmp_path, "modules:\n  tcp: {prober: tcp, timeout: 2s}\n") as client:
            status, text = await get(client, target=f"0:{port}")
    assert status == 200, text
    assert recorder.connections == 1


def test_a_name_that_resolves_to_an_unspecified_address_is_refused() -> None:
    cfg = prepare.load_text("target_policy: {deny_hosts: [x.invalid]}\nmodules: {t: {prober: tcp}}\n",
                           source="test")
    policy = cfg.modules["t"].policy
    assert policy is not None
    target = parse_target("blocked.example.test:443", 443)
    for address in ("0.0.0.0", "0.1.2.3", "::", "::ffff:0.0.0.0", "2002::"):
        with pytest.raises(access.TargetRefused) as refused:
            policy.check_addresses(target, [address])
        assert refused.value.reason == "unspecified_address"
        assert refused.value.message == ("target blocked.example.test resolves to an address that is unspecified "
                                         "(0.0.0.0/8 or ::), which connects to the local host")
    policy.check_addresses(target, ["::1", "127.0.0.1", "192.0.2.1"])  # nothing else denies these


def test_check_refuses_the_local_host_through_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from ssl_exporter import cli

    path = tmp_path / "config.yml"
    path.write_text(textwrap.dedent(DOCS_POLICY))
    recorder = Recorder()
    with pytls.serve(recorder.handle) as port:
        outputs = []
        for target in (f"0:{port}", f"[::ffff:0.0.0.0]:{port}", f"https://0.0.0.0:{port}/", f"[::]:{port}"):
            assert cli.main(["check", target, "--config.file", str(path)]) == 3
            outputs.append(capsys.readouterr().out)
    assert outputs == [
        f"SSL_CERT UNKNOWN - target refused: target 0.0.0.0 {UNSPECIFIED}\n",
        f"SSL_CERT UNKNOWN - target refused: target ::ffff:0:0 {UNSPECIFIED}\n",
        f"SSL_CERT UNKNOWN - target refused: target 0.0.0.0 {UNSPECIFIED}\n",
        f"SSL_CERT UNKNOWN - target refused: target :: {UNSPECIFIED}\n",
    ]
    assert recorder.connections == 0


async def test_a_port_rule_lets_one_service_through_a_denied_range(tmp_path: Path, tls_port, pki: PKI) -> None:
    recorder = Recorder()
    with tls_port() as (port, _), pytls.serve(recorder.handle) as other:
        async with exporter_client(tmp_path, f"""\
                target_policy:
                  deny_cidrs: [127.0.0.0/8, "::1/128"]
                  except_cidrs: ["127.0.0.1:{port}", "[::1]:{port}"]
                modules:
                  tcp: {{prober: tcp, timeout: 2s, tls_config: {{ca_file: {pki.root_file}}}}}
                  narrow:
                    prober: tcp
                    timeout: 2s
                    tls_config: {{ca_file: {pki.root_file}}}
                    target_policy: {{deny_cidrs: ["127.0.0.0/8:{port}"]}}
                """) as client:
            for target in (f"127.0.0.1:{port}", f"localhost:{port}"):  # localhost is ::1 too
                status, text = await get(client, target=target, hostname="localhost")
                assert status == 200, text
                assert Samples(text).get("ssl_probe_success") == 1
            # The same address on another port, and the exception's port elsewhere in the range.
            assert await get(client, target=f"127.0.0.1:{other}") == (
                403, "target refused: target 127.0.0.1 is in target_policy.deny_cidrs 127.0.0.0/8\n")
            assert await get(client, target=f"127.0.0.2:{port}") == (
                403, "target refused: target 127.0.0.2 is in target_policy.deny_cidrs 127.0.0.0/8\n")
            # A module's block is not lifted by the global exception: it can only narrow.
            assert await get(client, module="narrow", target=f"127.0.0.1:{port}") == (
                403, f"target refused: target 127.0.0.1 is in modules.narrow.target_policy.deny_cidrs "
                     f"127.0.0.0/8:{port}\n")
            # And an unspecified address stays refused whatever the exceptions say.
            assert (await get(client, target=f"0.0.0.0:{port}"))[0] == 403
            shown = (await (await client.get("/config")).text())
    assert recorder.connections == 0
    assert f"except_cidrs:\n  - 127.0.0.1/32:{port}\n  - '[::1/128]:{port}'" in shown


async def test_revocation_urls_at_the_local_host_are_not_fetched(tmp_path: Path, tls_port, pki: PKI) -> None:
    from ssl_exporter import prepare
    from tests.pki import make_root
    from tests.servers import ocsp as rev

    prepare.PROCESS_CACHES.revocation.clear()
    root = make_root("Policy Revocation Root")
    inter = rev.issue(root, "Policy Revocation Intermediate", ca=True)
    (tmp_path / "root.pem").write_bytes(root.pem)
    with rev.http_server() as server:
        http_port = server.base.rpartition(":")[2]
        leaf = rev.issue(inter, "localhost", dns=("localhost",), ocsp_url=f"http://[::ffff:0.0.0.0]:{http_port}/ocsp",
                         crl_url=f"http://0.0.0.0:{http_port}/inter.crl")
        server.routes["/inter.crl"] = rev.crl(inter)
        server.routes["/ocsp"] = rev.ocsp_response(leaf, inter)
        cert, key = leaf.write(tmp_path, "leaf", (inter,))
        with pytls.tls_server(cert, key) as (port, _):
            async with exporter_client(tmp_path, f"""\
                    target_policy:
                      deny_cidrs: [127.0.0.0/8, "::1/128"]
                      except_cidrs: ["127.0.0.1:{port}"]
                    modules:
                      tcp:
                        prober: tcp
                        timeout: 3s
                        tls_config: {{ca_file: {tmp_path / "root.pem"}}}
                        revocation: {{methods: [ocsp, crl]}}
                    """) as client:
                status, text = await get(client, target=f"127.0.0.1:{port}", hostname="localhost")
    assert status == 200, text
    samples = Samples(text)
    assert samples.get("ssl_chain_valid") == 1
    reasons = {(labels["method"], labels["reason"]) for labels in samples.series("ssl_revocation_status_info")
               if labels["position"] == "0"}
    assert reasons == {("ocsp", "refused_by_policy"), ("crl", "refused_by_policy")}
    assert server.requests == []
