"""The file and kubeconfig probers against real files in temporary folders."""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient
from cryptography.hazmat.primitives.serialization import BestAvailableEncryption, Encoding, pkcs7, pkcs12

from ssl_exporter import containers, sources
from ssl_exporter.probers import file as file_prober
from tests.conftest import PKI, Samples, probe, serve_exporter
from tests.pki import DAY, NOW, Cert

P12_PASSWORD = "correct horse"


@pytest.fixture
async def file_client(tmp_path_factory: pytest.TempPathFactory,
                      monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[TestClient]:
    monkeypatch.setenv("SSL_EXPORTER_TEST_P12", P12_PASSWORD)
    config = tmp_path_factory.mktemp("file-config") / "config.yml"
    config.write_text(textwrap.dedent("""\
        modules:
          files:
            prober: file
            file: {pkcs12_password_env: SSL_EXPORTER_TEST_P12}
          files_nopass:
            prober: file
          kubeconfig:
            prober: kubeconfig
        """))
    async with serve_exporter(config) as client:
        yield client


async def probe_files(client: TestClient, target: str, module: str = "files") -> Samples:
    return await probe(client, target, module=module)


def not_after(s: Samples, path: Path, position: int = 0) -> float | None:
    return s.get("ssl_cert_not_after_timestamp_seconds", file=str(path), position=str(position))


@pytest.fixture
def leaf(pki: PKI) -> Cert:
    return pki.inter.issue("files.example.test", dns=("files.example.test",), not_after=NOW + 5 * DAY)


async def test_pem_bundle_with_private_key(file_client, tmp_path: Path, leaf: Cert, pki: PKI) -> None:
    path = tmp_path / "bundle.pem"
    path.write_bytes(leaf.pem + leaf.key_pem + pki.inter.pem)
    s = await probe_files(file_client, str(path))
    assert s.get("ssl_probe_success") == 1
    assert s.errors() == set()
    assert not_after(s, path, 0) == leaf.not_after
    assert not_after(s, path, 1) == pki.inter.not_after
    assert s.get("ssl_cert_info", file=str(path), position="0", subject_cn="files.example.test") == 1
    # Private keys are skipped, never exported.
    key_body = b"".join(leaf.key_pem.splitlines()[1:-1]).decode()
    assert "PRIVATE KEY" not in s.text and key_body[:40] not in s.text
    phases = {labels["phase"] for labels in s.series("ssl_probe_phase_duration_seconds")}
    assert phases == {"read"}
    assert s.series("ssl_handshake_success") == []  # not a TLS probe: absent, not 0


async def test_every_container_format(file_client, tmp_path: Path, leaf: Cert, pki: PKI) -> None:
    (tmp_path / "leaf.pem").write_bytes(leaf.pem)
    shutil.copy(tmp_path / "leaf.pem", tmp_path / "for-openssl.pem")
    subprocess.run(["openssl", "x509", "-in", tmp_path / "for-openssl.pem", "-addtrust", "serverAuth",
                    "-out", tmp_path / "trusted.pem"], check=True, capture_output=True)
    (tmp_path / "for-openssl.pem").unlink()
    assert b"BEGIN TRUSTED CERTIFICATE" in (tmp_path / "trusted.pem").read_bytes()
    (tmp_path / "leaf.der").write_bytes(leaf.der)
    (tmp_path / "chain.p7b").write_bytes(pkcs7.serialize_certificates([leaf.cert, pki.inter.cert], Encoding.DER))
    (tmp_path / "chain.p7.pem").write_bytes(pkcs7.serialize_certificates([leaf.cert, pki.inter.cert], Encoding.PEM))
    (tmp_path / "store.p12").write_bytes(pkcs12.serialize_key_and_certificates(
        b"store", leaf.key, leaf.cert, [pki.inter.cert], BestAvailableEncryption(P12_PASSWORD.encode())))
    s = await probe_files(file_client, f"{tmp_path}/*")
    assert s.get("ssl_probe_success") == 1, s.errors()
    for name in ("leaf.pem", "trusted.pem", "leaf.der", "store.p12"):
        assert not_after(s, tmp_path / name) == leaf.not_after, name
    assert not_after(s, tmp_path / "store.p12", 1) == pki.inter.not_after
    for name in ("chain.p7b", "chain.p7.pem"):  # PKCS#7 holds a SET: no order to keep
        assert {not_after(s, tmp_path / name, 0), not_after(s, tmp_path / name, 1)} == {
            leaf.not_after, pki.inter.not_after}, name
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == 9


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("corrupt.pem", b"-----BEGIN CERTIFICATE-----\nnot base64 !!\n-----END CERTIFICATE-----\n", "bad_pem"),
        ("truncated.pem", None, "bad_pem"),
        ("garbage.der", os.urandom(64), "bad_der"),
        ("key-only.pem", "KEY", "no_certificate"),
        ("empty.pem", b"", "bad_der"),
        ("broken.p12", b"\x30\x03\x02\x01\x03", "bad_pkcs12"),
    ],
)
async def test_unreadable_files_are_named(file_client, tmp_path: Path, leaf: Cert, name: str, content, reason) -> None:
    good = tmp_path / "good.pem"
    good.write_bytes(leaf.pem)
    bad = tmp_path / name
    if content == "KEY":
        content = leaf.key_pem
    elif content is None:  # a certificate cut in the middle: base64 decodes, DER does not
        lines = leaf.pem.splitlines()
        content = b"\n".join(lines[:3] + lines[-1:]) + b"\n"
    bad.write_bytes(content)
    s = await probe_files(file_client, f"{tmp_path}/*")
    assert s.get("ssl_probe_success") == 0
    assert s.errors() == {("read", reason)}
    assert s.get("ssl_source_error_info", file=str(bad), reason=reason) == 1
    assert not_after(s, good) == leaf.not_after  # one bad file hides nothing else


async def test_pkcs12_password(file_client, tmp_path: Path, leaf: Cert) -> None:
    path = tmp_path / "store.pfx"
    path.write_bytes(pkcs12.serialize_key_and_certificates(
        b"store", leaf.key, leaf.cert, None, BestAvailableEncryption(P12_PASSWORD.encode())))
    ok = await probe_files(file_client, str(path))
    missing = await probe_files(file_client, str(path), module="files_nopass")
    assert not_after(ok, path) == leaf.not_after
    assert missing.errors() == {("read", "bad_password")}
    assert missing.get("ssl_source_error_info", file=str(path), reason="bad_password") == 1
    assert P12_PASSWORD not in missing.text


async def test_globs_symlinks_and_nothing_matched(file_client, tmp_path: Path, leaf: Cert, pki: PKI) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "one.pem").write_bytes(leaf.pem)
    (tmp_path / "a" / "b" / "two.pem").write_bytes(pki.inter.pem)
    (tmp_path / "a" / "b" / "skip.crt").write_bytes(pki.inter.pem)
    (tmp_path / "a" / ".hidden").mkdir()
    (tmp_path / "a" / ".hidden" / "three.pem").write_bytes(leaf.pem)
    (tmp_path / "a" / "b" / "link.pem").symlink_to(tmp_path / "a" / "one.pem")
    (tmp_path / "a" / "loop").symlink_to(tmp_path / "a")  # a folder loop is not followed
    s = await probe_files(file_client, f"{tmp_path}/**/*.pem")
    files = sorted(labels["file"] for labels in s.series("ssl_cert_not_after_timestamp_seconds"))
    assert files == [str(tmp_path / "a" / "b" / "link.pem"), str(tmp_path / "a" / "b" / "two.pem"),
                     str(tmp_path / "a" / "one.pem")]
    assert s.get("ssl_probe_success") == 1

    (tmp_path / "a" / "dangling.pem").symlink_to(tmp_path / "gone.pem")
    s = await probe_files(file_client, f"{tmp_path}/a/*.pem")
    assert s.get("ssl_source_error_info", file=str(tmp_path / "a" / "dangling.pem"), reason="not_found") == 1

    none = await probe_files(file_client, f"{tmp_path}/**/*.nothing")
    assert none.get("ssl_probe_success") == 0
    assert none.errors() == {("read", "not_found")}
    missing = await probe_files(file_client, str(tmp_path / "missing.pem"))
    assert missing.errors() == {("read", "not_found")}


async def test_relative_target_is_rejected(file_client) -> None:
    response = await file_client.get("/probe", params={"target": "certs/*.pem", "module": "files"})
    assert response.status == 400
    assert await response.text() == "target 'certs/*.pem': the file prober needs an absolute path or glob\n"


@pytest.mark.parametrize("target", ["/x/**/[z-a].pem", "/x/**/[a-\\].pem"])
async def test_bad_double_star_glob_is_400(file_client, target: str) -> None:
    response = await file_client.get("/probe", params={"target": target, "module": "files"})
    text = await response.text()
    assert response.status == 400, text
    assert text.startswith(f"target {target!r} is not a valid glob: ") and text.count("\n") == 1


def test_backslash_in_a_double_star_class_is_literal(tmp_path: Path, leaf: Cert) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "\\.pem").write_bytes(leaf.pem)
    (tmp_path / "a" / "x.pem").write_bytes(leaf.pem)
    target = file_prober.parse_target(f"{tmp_path}/**/[\\].pem", None)  # type: ignore[arg-type]
    assert list(file_prober.expand(target)) == [str(tmp_path / "a" / "\\.pem")]


def test_double_star_walk_stops_at_the_match_limit(tmp_path: Path, leaf: Cert,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_prober, "MAX_FILES", 5)
    for i in range(20):
        (tmp_path / f"d{i:02d}").mkdir()
        (tmp_path / f"d{i:02d}" / "c.pem").write_bytes(leaf.pem)
    walked: list[str] = []
    real_walk = os.walk

    def counting_walk(*args, **kwargs):
        for entry in real_walk(*args, **kwargs):
            walked.append(entry[0])
            yield entry

    monkeypatch.setattr(file_prober.os, "walk", counting_walk)
    results = file_prober.read_files(f"{tmp_path}/**/*.pem", None, containers.ParseCache())
    assert len(walked) <= 7  # the base folder and the first six d* folders, not all twenty
    assert len(results) == 6 and results[-1].error is not None and results[-1].error.reason == "oversized"


def test_double_star_walk_bounds_visited_entries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_prober, "MAX_WALK_ENTRIES", 50)
    for i in range(100):
        (tmp_path / f"d{i:03d}").mkdir()
        (tmp_path / f"d{i:03d}" / "unrelated.txt").write_bytes(b"")
    results = file_prober.read_files(f"{tmp_path}/**/*.pem", None, containers.ParseCache())
    assert [r.error.reason for r in results if r.error] == ["oversized"]


async def test_file_work_runs_in_its_own_threads(file_client, tmp_path: Path, leaf: Cert,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "c.pem").write_bytes(leaf.pem)
    threads: list[str] = []
    real = file_prober.read_files

    def recording(*args):
        threads.append(threading.current_thread().name)
        return real(*args)

    monkeypatch.setattr(file_prober, "read_files", recording)
    s = await probe_files(file_client, f"{tmp_path}/*.pem")
    assert s.get("ssl_probe_success") == 1
    assert len(threads) == 1 and threads[0].startswith("ssl-exporter-read")


def test_parse_cache_is_thread_safe(leaf: Cert) -> None:
    cache = containers.ParseCache(max_entries=4)
    result = containers.FileResult()
    errors: list[BaseException] = []
    rounds, workers = 20_000, 8

    def hammer(seed: int) -> None:
        try:
            for i in range(rounds):
                key = (seed * rounds + i) % 16,
                if cache.get(key) is None:
                    cache.put(key, result)
        except BaseException as exc:  # noqa: BLE001 - any race shows up here
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        pool = [threading.Thread(target=hammer, args=(n,)) for n in range(workers)]
        for thread in pool:
            thread.start()
        for thread in pool:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert cache.hits + cache.misses == rounds * workers


def test_permission_denied_is_reported(leaf: Cert) -> None:
    # Root reads any file, so a forked child drops to an unprivileged user to read.
    folder = Path(tempfile.mkdtemp(prefix="ssl-exporter-perm-"))
    try:
        folder.chmod(0o755)
        path = folder / "secret.pem"
        path.write_bytes(leaf.pem)
        path.chmod(0o600)
        assert _read_as_nobody(str(path)) == ("permission_denied" if os.getuid() == 0 else "read")
        path.chmod(0o644)
        assert _read_as_nobody(str(path)) == "read"
    finally:
        shutil.rmtree(folder)


def _read_as_nobody(path: str) -> str:
    reader, writer = os.pipe()
    pid = os.fork()
    if pid == 0:  # child: drop privileges, read, report, exit without running pytest's cleanup
        try:
            os.close(reader)
            if os.getuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            result = containers.read_file(path, None, containers.ParseCache())
            os.write(writer, (result.error.reason if result.error else "read").encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as pipe:
        answer = pipe.read()
    os.waitpid(pid, 0)
    return answer


def test_unchanged_files_are_not_parsed_again(tmp_path: Path, leaf: Cert, pki: PKI) -> None:
    for i in range(10_000):
        folder = tmp_path / f"d{i % 100:02d}"
        folder.mkdir(exist_ok=True)
        (folder / f"c{i}.pem").write_bytes(leaf.pem if i % 2 else pki.inter.pem)
    cache = containers.ParseCache()
    cold = file_prober.read_files(f"{tmp_path}/**/*.pem", None, cache)
    assert (cache.hits, cache.misses) == (0, 10_000)
    warm = file_prober.read_files(f"{tmp_path}/**/*.pem", None, cache)
    assert (cache.hits, cache.misses) == (10_000, 10_000)
    assert warm == cold
    assert sum(len(r.certs) for r in warm) == 10_000
    changed = tmp_path / "d01" / "c1.pem"
    changed.write_bytes(pki.inter.pem + leaf.pem)  # new size and mtime: parsed again
    again = file_prober.read_files(f"{tmp_path}/**/*.pem", None, cache)
    assert cache.misses == 10_001
    assert [c.subject_cn for c in next(r for r in again if r.certs[0].source["file"] == str(changed)).certs] == [
        "Test Intermediate CA", "files.example.test"]


# --- kubeconfig ---------------------------------------------------------------------------


async def test_kubeconfig_inline_and_file_references(file_client, tmp_path: Path, leaf: Cert, pki: PKI) -> None:
    client_cert = pki.inter.issue("system:admin", not_after=NOW + 3 * DAY)
    (tmp_path / "pki").mkdir()
    (tmp_path / "pki" / "client.crt").write_bytes(client_cert.pem)
    kubeconfig = tmp_path / "admin.conf"
    kubeconfig.write_text(textwrap.dedent(f"""\
        apiVersion: v1
        kind: Config
        current-context: prod
        clusters:
        - name: prod
          cluster:
            server: https://127.0.0.1:6443
            certificate-authority-data: {base64.b64encode(pki.root.pem).decode()}
        - name: staging
          cluster:
            server: https://127.0.0.1:7443
            certificate-authority: missing-ca.crt
        users:
        - name: admin
          user:
            client-certificate: pki/client.crt
            client-key-data: {base64.b64encode(client_cert.key_pem).decode()}
        - name: robot
          user:
            token: abc
        contexts:
        - name: prod
          context: {{cluster: prod, user: admin}}
        """))
    s = await probe_files(file_client, str(kubeconfig), module="kubeconfig")
    labels = {"kubeconfig": str(kubeconfig)}
    assert s.get("ssl_cert_not_after_timestamp_seconds", **labels, name="prod", type="cluster",
                 position="0") == pki.root.not_after
    assert s.get("ssl_cert_not_after_timestamp_seconds", **labels, name="admin", type="user",
                 position="0") == client_cert.not_after
    assert s.get("ssl_source_error_info", **labels, name="staging", type="cluster", reason="not_found") == 1
    assert s.get("ssl_probe_success") == 0
    assert base64.b64encode(client_cert.key_pem).decode()[:40] not in s.text


async def test_kubeconfig_that_is_not_yaml(file_client, tmp_path: Path) -> None:
    path = tmp_path / "broken.conf"
    path.write_text("clusters: [unclosed\n")
    s = await probe_files(file_client, str(path), module="kubeconfig")
    assert s.errors() == {("read", "bad_kubeconfig")}
    assert s.get("ssl_source_error_info", kubeconfig=str(path), reason="bad_kubeconfig") == 1


# --- hostile files, devices and globs --------------------------------------------------------


def _in_thread(func, *args, within: float = 10.0):
    """``func(*args)`` in a thread; fails the test if it is still running after ``within`` s
    (a read that blocks for good must fail the test, not hang the suite)."""
    outcome: list = []
    thread = threading.Thread(target=lambda: outcome.append(func(*args)), daemon=True)
    thread.start()
    thread.join(within)
    assert not thread.is_alive(), f"{func.__name__} still running after {within} s"
    return outcome[0]


@pytest.mark.parametrize("kind", ["fifo", "ptmx", "zero"])
def test_a_file_swapped_for_a_device_after_the_stat_is_refused(tmp_path: Path, kind: str) -> None:
    """The race: stat saw a regular file, and a FIFO or device is what gets opened."""
    if kind == "fifo":
        path = str(tmp_path / "swapped.pem")
        os.mkfifo(path)
    else:
        path = f"/dev/{kind}"
    result = _in_thread(containers._parse_file, path, 100, None)
    assert result.error is not None and result.error.reason == "not_found"
    assert result.error.detail == "not a regular file"


def _der_tlv(tag: int, content: bytes) -> bytes:
    n = len(content)
    size = (n.bit_length() + 7) // 8
    length = bytes([n]) if n < 0x80 else bytes([0x80 | size]) + n.to_bytes(size, "big")
    return bytes([tag]) + length + content


def _rewrite_integers(der: bytes, old: set[int], new: int) -> bytes:
    """``der`` with every INTEGER whose value is in ``old`` set to ``new``, lengths fixed up:
    a real PKCS#12 file made cheaply with small counts, turned into a costly one."""
    out, pos = b"", 0
    while pos < len(der):
        tag, first = der[pos], der[pos + 1]
        pos += 2
        if first & 0x80:
            size = first & 0x7F
            length = int.from_bytes(der[pos : pos + size], "big")
            pos += size
        else:
            length = first
        content = der[pos : pos + length]
        pos += length
        if tag & 0x20:
            content = _rewrite_integers(content, old, new)
        elif tag == 0x04 and content[:1] == b"\x30":  # PKCS#12 nests DER in OCTET STRINGs
            try:
                content = _rewrite_integers(content, old, new)
            except IndexError:
                pass
        elif tag == 0x02 and int.from_bytes(content, "big", signed=True) in old:
            content = new.to_bytes((new.bit_length() + 8) // 8, "big", signed=True)
        out += _der_tlv(tag, content)
    return out


def _costly_p12(leaf: Cert, iterations: int, password: bytes | None = None) -> bytes:
    from cryptography.hazmat.primitives import hashes
    from cryptography.hazmat.primitives.serialization import PrivateFormat
    from cryptography.hazmat.primitives.serialization.pkcs12 import PBES

    encryption = (PrivateFormat.PKCS12.encryption_builder().kdf_rounds(5000)
                  .key_cert_algorithm(PBES.PBESv2SHA256AndAES256CBC).hmac_hash(hashes.SHA256())
                  .build(password or b"pw"))
    real = pkcs12.serialize_key_and_certificates(b"x", leaf.key, leaf.cert, None, encryption)
    return _rewrite_integers(real, {5000, 2048}, iterations)


async def test_pkcs12_with_a_huge_iteration_count_is_refused_before_deriving(
        file_client, tmp_path: Path, leaf: Cert) -> None:
    path = tmp_path / "costly.p12"
    path.write_bytes(_costly_p12(leaf, 2**31 - 1))
    loop = asyncio.get_running_loop()
    started = loop.time()
    s = await probe_files(file_client, str(path), module="files_nopass")
    assert loop.time() - started < 2  # minutes of key derivation before
    assert s.get("ssl_source_error_info", file=str(path), reason="excessive_iterations") == 1
    assert s.errors() == {("read", "excessive_iterations")}


def test_pkcs12_iteration_caps(leaf: Cert) -> None:
    # Within the cap: still read (the rewritten file's MAC no longer verifies, so "bad_password").
    for iterations, reason in ((600_000, "bad_password"), (sources.MAX_PKCS12_ITERATIONS + 1, "excessive_iterations"),
                               (2**64, "excessive_iterations")):
        result = containers.parse_container(_costly_p12(leaf, iterations), {"file": "x.p12"}, "x.p12", b"pw")
        assert result.error is not None and result.error.reason == reason, iterations
    # A real file at OpenSSL's and cryptography's defaults reads as before.
    p12 = pkcs12.serialize_key_and_certificates(b"x", leaf.key, leaf.cert, None, BestAvailableEncryption(b"pw"))
    read = containers.parse_container(p12, {"file": "y.p12"}, "y.p12", b"pw")
    assert [c.serial for c in read.certs] == [leaf.serial]


def _self_linking_folder(tmp_path: Path, leaf: Cert) -> Path:
    """A folder holding a certificate and three symlinks to itself."""
    loop = tmp_path / "loop"
    loop.mkdir()
    (loop / "cert.pem").write_bytes(leaf.pem)
    for name in ("a", "b", "c"):
        (loop / name).symlink_to(loop)
    return loop


def test_wildcards_follow_a_bounded_number_of_symlinked_folders(tmp_path: Path, leaf: Cert) -> None:
    loop = _self_linking_folder(tmp_path, leaf)
    assert file_prober.MAX_SYMLINKED_FOLDERS == 4
    within = list(file_prober.expand(f"{loop}/*/*/*/*/cert.pem"))
    assert len(within) == 3**4  # a/a/a/a/cert.pem ... c/c/c/c/cert.pem
    beyond = _in_thread(lambda: list(file_prober.expand(f"{loop}" + "/*" * 14 + "/cert.pem")))
    assert beyond == []  # 3^14 paths through 14 links before; none now


async def test_a_symlink_loop_glob_stops_at_the_deadline_and_frees_its_thread(
        tmp_path: Path, leaf: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    loop_dir = _self_linking_folder(tmp_path, leaf)
    monkeypatch.setattr(file_prober, "MAX_SYMLINKED_FOLDERS", 40)  # as unbounded as before
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  files: {prober: file, timeout: 1s}\n")
    loop = asyncio.get_running_loop()
    async with serve_exporter(config) as client:
        started = loop.time()
        s = await probe(client, str(loop_dir) + "/*" * 14 + "/cert.pem", module="files")
        assert loop.time() - started < 2  # timeout + 1 s
        assert s.errors() == {("read", "timeout")}
        # The walk stops at its next checkpoint instead of running on for a minute.
        while file_prober.FILE_POOL.busy():
            assert loop.time() - started < 3, "the walk did not stop after the deadline"
            await asyncio.sleep(0.05)
        own = Samples(await (await client.get("/metrics")).text())
        assert own.get("ssl_exporter_read_threads_stuck", prober="file") == 0


async def test_a_stuck_read_thread_is_counted_and_starves_no_other_prober(
        tmp_path: Path, leaf: Cert, pki: PKI, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reads stuck in the kernel (a dead NFS server) ignore checkpoints: they hold their file
    threads, show in ssl_exporter_read_threads_stuck, and kubeconfig probes still run."""
    release = threading.Event()
    monkeypatch.setattr(file_prober, "read_files", lambda *args: release.wait(30) and [])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text("users:\n- name: u\n  user:\n    client-certificate-data: "
                          + base64.b64encode(leaf.pem).decode() + "\n")
    config = tmp_path / "config.yml"
    config.write_text("modules:\n  files: {prober: file, timeout: 0.5s}\n  kubeconfig: {prober: kubeconfig}\n")
    try:
        async with serve_exporter(config) as client:
            stuck = file_prober.FILE_POOL.workers
            answers = await asyncio.gather(*(probe(client, f"/nowhere/{i}.pem", module="files")
                                             for i in range(stuck)))
            assert all(s.errors() == {("read", "timeout")} for s in answers)
            own = Samples(await (await client.get("/metrics")).text())
            assert own.get("ssl_exporter_read_threads_stuck", prober="file") == stuck
            assert own.get("ssl_exporter_read_threads_stuck", prober="kubeconfig") == 0
            s = await probe(client, str(kubeconfig), module="kubeconfig")
            assert s.get("ssl_probe_success") == 1
    finally:
        release.set()


async def test_certificates_per_answer_are_capped(file_client, tmp_path: Path, leaf: Cert, pki: PKI,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(containers, "MAX_CERTS", 5)
    (tmp_path / "a.pem").write_bytes(leaf.pem + pki.inter.pem + pki.root.pem)
    (tmp_path / "b.pem").write_bytes(leaf.pem + pki.inter.pem + pki.root.pem)
    (tmp_path / "c.pem").write_bytes(leaf.pem)
    s = await probe_files(file_client, f"{tmp_path}/*.pem")
    assert len(s.series("ssl_cert_not_after_timestamp_seconds")) == 5
    assert s.errors() == {("read", "oversized")}
    assert s.get("ssl_source_error_info", file=f"{tmp_path}/*.pem", reason="oversized") == 1
    assert s.get("ssl_probe_success") == 0


# --- file.roots --------------------------------------------------------------------------------


@pytest.fixture
async def rooted(tmp_path: Path, leaf: Cert) -> AsyncIterator[tuple[TestClient, Path]]:
    certs = tmp_path / "certs"
    (certs / "sub").mkdir(parents=True)
    (certs / "sub" / "leaf.pem").write_bytes(leaf.pem)
    (tmp_path / "outside.pem").write_bytes(leaf.pem)
    (certs / "escape.pem").symlink_to(tmp_path / "outside.pem")
    config = tmp_path / "config.yml"
    config.write_text(f"modules:\n  files: {{prober: file, file: {{roots: [{certs}]}}}}\n")
    async with serve_exporter(config) as client:
        yield client, certs


async def test_roots_allow_targets_inside(rooted) -> None:
    client, certs = rooted
    s = await probe(client, f"{certs}/sub/*.pem", module="files")
    assert s.get("ssl_probe_success") == 1
    s = await probe(client, f"{certs}/**/*.pem", module="files")
    assert s.get("ssl_source_error_info", file=f"{certs}/escape.pem", reason="permission_denied") == 1
    assert s.get("ssl_cert_not_after_timestamp_seconds", file=f"{certs}/sub/leaf.pem", position="0") is not None


@pytest.mark.parametrize("target", [
    "/etc/shadow", "/etc/ssh/*", "/nonexistent/file.pem", "{certs}/../outside.pem", "{certs}/sub/../../outside.pem",
    "{certs}-other/x.pem", "{parent}/*/sub/leaf.pem",
])
async def test_roots_refuse_targets_outside_alike(rooted, target: str) -> None:
    client, certs = rooted
    response = await client.get("/probe", params={"module": "files",
                                                  "target": target.format(certs=certs, parent=certs.parent)})
    assert response.status == 400
    text = await response.text()
    assert "outside this module's file.roots" in text or "'..' is not allowed" in text


async def test_roots_refuse_a_symlink_leading_out(rooted) -> None:
    client, certs = rooted
    s = await probe(client, f"{certs}/escape.pem", module="files")
    assert s.errors() == {("read", "permission_denied")}
    assert s.series("ssl_cert_not_after_timestamp_seconds") == []


@pytest.mark.parametrize(("roots", "message"), [
    ("[relative/path]", "expected absolute folder paths"),
    ("[/nonexistent-folder]", "/nonexistent-folder is not a folder"),
    ("[]", "expected a non-empty list of folders"),
])
def test_bad_roots_are_config_errors(tmp_path: Path, roots: str, message: str) -> None:
    from ssl_exporter import config, prepare

    with pytest.raises(config.ConfigError) as caught:
        prepare.load_text(f"modules:\n  f: {{prober: file, file: {{roots: {roots}}}}}\n", source="test")
    assert str(caught.value).startswith("modules.f.file.roots: ") and message in str(caught.value)


def test_wildcard_walk_stops_at_the_match_limit(tmp_path: Path, leaf: Cert, monkeypatch: pytest.MonkeyPatch) -> None:
    """glob.glob listed (and sorted) every match before the cap applied; the walk stops."""
    monkeypatch.setattr(file_prober, "MAX_FILES", 5)
    for i in range(10):
        (tmp_path / f"d{i}").mkdir()
        for j in range(3):
            (tmp_path / f"d{i}" / f"{j}.pem").write_bytes(leaf.pem)
    scanned: list[str] = []
    real = os.scandir

    def recording(path):
        scanned.append(os.path.basename(path))
        return real(path)

    monkeypatch.setattr(file_prober.os, "scandir", recording)
    results = file_prober.read_files(f"{tmp_path}/d*/*.pem", None, containers.ParseCache())
    assert scanned == [tmp_path.name, "d0", "d1"]  # 6 matches > 5: d2 to d9 are never listed
    assert [r.certs[0].serial for r in results[:5]] == [leaf.serial] * 5
    assert len(results) == 6 and results[-1].error is not None and results[-1].error.reason == "oversized"
