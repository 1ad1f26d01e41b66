"""The container image: built from Containerfile with Debian's podman, run as the manifests run it.

No container registry is reachable here, so the base image the Containerfile names is made
on this machine: debootstrap a minimal bookworm from the Debian mirror apt already uses,
slimmed as Debian's ``-slim`` images are, imported under the exact name of the ``FROM``
lines, and cached (a tarball under the user's cache directory, and podman's own storage) so
that only a fresh machine debootstraps. The build then runs with ``--pull=never``.

What podman 4.3 needs on these machines (docs/container.md): the runc runtime (crun refuses
the cgroup layout), ulimits no higher than the host's hard limits, the host network (the
build reaches the package index, the probe stays on loopback), and, for pip behind the
TLS-inspecting proxy, the host's CA bundle and a pip.conf naming it mounted into the build
steps, so that the Containerfile itself stays free of anything site-specific.

The container then runs with the pod and container securityContext of
deploy/kubernetes/deployment.yaml translated into podman flags, probes a loopback nginx,
serves /metrics and /-/healthy, and stops on SIGTERM within the shutdown bound.
"""

from __future__ import annotations

import json
import os
import re
import resource
import shutil
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from ssl_exporter import __version__
from tests.conftest import Samples
from tests.pki import DAY, NOW, make_root
from tests.servers.daemons import free_ports
from tests.servers.nginx import Site, run_nginx

ROOT = Path(__file__).resolve().parent.parent
CONTAINERFILE = ROOT / "Containerfile"
DEPLOYMENT = ROOT / "deploy" / "kubernetes" / "deployment.yaml"
IMAGE = "localhost/ssl-exporter:test"
SUITE = "bookworm"
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
# Where the build steps see the host's bundle: /dev is a fresh tmpfs in every build step,
# so the mount point leaves nothing behind in the image.
BUILD_CA_PATH = "/dev/host-ca-certificates.crt"
BUILD_TIMEOUT = 1200  # seconds; a cold build (debootstrap, apt, pip) takes a few minutes
SUDO = [] if os.geteuid() == 0 else ["sudo", "-n"]  # podman and debootstrap run as root
PODMAN = [*SUDO, "podman", "--runtime", "runc"]


def _run(argv: list[str], timeout: float = 120, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, **kwargs)
    if result.returncode != 0:
        raise AssertionError(f"{' '.join(argv)} exited {result.returncode}:\n{result.stdout[-3000:]}"
                             f"\n{result.stderr[-3000:]}")
    return result


def base_image() -> str:
    """The one image every FROM of the Containerfile names (build stages aside)."""
    names = set(re.findall(r"^FROM\s+(\S+)", CONTAINERFILE.read_text(), re.MULTILINE))
    assert len(names) == 1, names
    return names.pop()


def ulimit_flags() -> list[str]:
    """``--ulimit`` at most the host's hard limits: podman's defaults exceed them here."""
    flags = []
    for name, resource_id, wanted in (("nofile", resource.RLIMIT_NOFILE, 8192),
                                      ("nproc", resource.RLIMIT_NPROC, 4096)):
        hard = resource.getrlimit(resource_id)[1]
        value = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
        flags.append(f"--ulimit={name}={value}:{value}")
    return flags


def debian_mirror() -> str:
    """The first mirror of the main archive that apt's sources name for this suite."""
    candidates: list[tuple[str, list[str], list[str]]] = []  # (uri, suites, components)
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        if not path.is_file():
            continue
        text = path.read_text(errors="replace")
        if path.suffix == ".sources":  # deb822: blank-line separated stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, re.MULTILINE))
                if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes") != "no":
                    for uri in fields.get("URIs", "").split():
                        candidates.append((uri, fields.get("Suites", "").split(),
                                           fields.get("Components", "").split()))
        elif path.name == "sources.list" or path.suffix == ".list":
            for line in text.splitlines():
                words = re.sub(r"\[[^]]*\]", "", line.split("#", 1)[0]).split()
                if len(words) >= 3 and words[0] == "deb":
                    candidates.append((words[1], [words[2]], words[3:]))
    for uri, suites, components in candidates:
        if SUITE in suites and "main" in components:
            return uri
    raise AssertionError(f"no apt source names Debian {SUITE} main: cannot debootstrap the base image")


# What Debian's -slim images leave out (debuerreotype's slimify), and apt cleaning up after
# itself as in Debian's official images: the base is then close to the one users pull.
_DPKG_EXCLUDES = """\
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
"""
_CLEAN_APT_CACHE = "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin"
_APT_CLEAN = f"""\
DPkg::Post-Invoke {{ "{_CLEAN_APT_CACHE} || true"; }};
APT::Update::Post-Invoke {{ "{_CLEAN_APT_CACHE} || true"; }};
Dir::Cache::pkgcache ""; Dir::Cache::srcpkgcache "";
"""


def _slim(rootfs: Path) -> None:
    (rootfs / "etc/dpkg/dpkg.cfg.d/docker").write_text(_DPKG_EXCLUDES)
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(_APT_CLEAN)
    (rootfs / "etc/apt/apt.conf.d/docker-no-languages").write_text('Acquire::Languages "none";\n')
    script = (
        "find usr/share/doc -mindepth 1 -not -name copyright -not -type d -delete;"
        "find usr/share/doc -mindepth 1 -type d -empty -delete;"
        "rm -rf usr/share/info/* usr/share/man/* usr/share/groff/* usr/share/lintian/* usr/share/linda/*;"
        "find usr/share/locale -mindepth 1 -maxdepth 1 -not -name locale.alias -exec rm -rf {} +;"
        "rm -rf var/cache/apt/archives/*.deb var/cache/apt/*.bin var/lib/apt/lists/* var/log/* dev/*"
    )
    _run([*SUDO, "sh", "-c", script], cwd=rootfs)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "ssl_exporter-tests" / "container-base"


def ensure_base_image(name: str) -> str:
    """Make ``name`` exist in podman's storage; say where it came from."""
    if subprocess.run([*PODMAN, "image", "exists", name], check=False).returncode == 0:
        return "podman storage"
    tarball = cache_dir() / (re.sub(r"[^A-Za-z0-9_.-]", "_", name) + ".tar")
    origin = "cached tarball"
    if not tarball.exists():
        origin = "debootstrap"
        tarball.parent.mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(prefix="ssl-exporter-base-", dir=tarball.parent))
        try:
            rootfs = work / "rootfs"
            _run([*SUDO, "debootstrap", "--variant=minbase", "--components=main", SUITE, str(rootfs),
                  debian_mirror()], timeout=900)
            _slim(rootfs)
            partial = work / "base.tar"
            _run([*SUDO, "tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(partial), "."], timeout=300)
            os.replace(partial, tarball)  # whole or absent: an interrupted run leaves no half tarball
        finally:
            _run([*SUDO, "rm", "-rf", str(work)])
    _run([*PODMAN, "import", str(tarball), name], timeout=300)
    return origin


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> str:
    start = time.monotonic()
    origin = ensure_base_image(base_image())
    based = time.monotonic()
    assert HOST_CA_BUNDLE.is_file(), f"{HOST_CA_BUNDLE} missing: install the Debian package ca-certificates"
    pip_conf = tmp_path_factory.mktemp("build") / "pip.conf"
    pip_conf.write_text(f"[global]\ncert = {BUILD_CA_PATH}\n")
    _run([*PODMAN, "build", "--pull=never", "--network=host", *ulimit_flags(),
          "-v", f"{HOST_CA_BUNDLE}:{BUILD_CA_PATH}:ro", "-v", f"{pip_conf}:/etc/pip.conf:ro",
          "-f", str(CONTAINERFILE), "-t", IMAGE, str(ROOT)], timeout=BUILD_TIMEOUT)
    # Shown with -s or on failure: the numbers docs/container.md reports.
    print(f"base image from {origin} in {based - start:.1f}s, build in {time.monotonic() - based:.1f}s, "
          f"image {int(_inspect_image()['Size']) / 1e6:.1f} MB")
    return IMAGE


def _inspect_image() -> dict[str, Any]:
    return json.loads(_run([*PODMAN, "image", "inspect", IMAGE]).stdout)[0]


# ---- the Kubernetes manifest, translated into podman flags -------------------------------


def _deployment_container() -> tuple[dict[str, Any], dict[str, Any]]:
    deployment = yaml.safe_load(DEPLOYMENT.read_text())
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    return pod, container


def security_flags() -> list[str]:
    """podman flags for what deployment.yaml asks of the pod and its container."""
    pod, container = _deployment_container()
    context = {**pod.get("securityContext", {}), **container["securityContext"]}
    known = {"runAsNonRoot", "runAsUser", "runAsGroup", "seccompProfile", "readOnlyRootFilesystem",
             "allowPrivilegeEscalation", "capabilities"}
    assert set(context) <= known, f"translate {set(context) - known} into podman flags"
    assert context["runAsNonRoot"] is True and context["runAsUser"] != 0
    assert context["seccompProfile"] == {"type": "RuntimeDefault"}  # podman's default profile
    assert context["capabilities"] == {"drop": ["ALL"]}
    flags = [f"--user={context['runAsUser']}:{context['runAsGroup']}", "--cap-drop=ALL"]
    if context["readOnlyRootFilesystem"]:
        # Kubernetes mounts no tmpfs of its own: only the volumes the manifest names.
        flags += ["--read-only", "--read-only-tmpfs=false"]
    if context["allowPrivilegeEscalation"] is False:
        flags.append("--security-opt=no-new-privileges")
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in container["volumeMounts"]:
        empty_dir = volumes[mount["name"]].get("emptyDir")
        if empty_dir is not None:  # the scratch directory; ConfigMaps are mounted by the test
            size = empty_dir.get("sizeLimit", "16Mi").replace("Mi", "m")
            flags.append(f"--tmpfs={mount['mountPath']}:rw,size={size},mode=1777")
    return flags


class Container:
    """The image running in the foreground of a ``podman run``; ready once it logs that it listens."""

    def __init__(self, name: str, flags: list[str], args: list[str]) -> None:
        self.name = name
        self.port = free_ports("exporter")["exporter"]
        self.process = subprocess.Popen(
            [*PODMAN, "run", "--rm", f"--name={name}", "--network=host", *ulimit_flags(), *flags, IMAGE,
             *args, f"--web.listen-address=127.0.0.1:{self.port}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.log: list[str] = []
        self.wait_for_log("listening")

    def wait_for_log(self, needle: str) -> str:
        assert self.process.stdout is not None
        for line in self.process.stdout:  # blocks until the container writes; ends at exit
            self.log.append(line)
            if needle in line:
                return line
        raise AssertionError(f"container exited ({self.process.wait()}) before logging {needle!r}:\n"
                             + "".join(self.log[-30:]))

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=20) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def pid(self) -> int:
        return int(_run([*PODMAN, "inspect", "--format={{.State.Pid}}", self.name]).stdout)


@contextmanager
def running(flags: list[str], args: list[str]) -> Iterator[Container]:
    name = f"ssl-exporter-test-{os.getpid()}"
    container = Container(name, flags, args)
    try:
        yield container
    finally:
        if container.process.poll() is None:
            subprocess.run([*PODMAN, "rm", "--force", "--time=0", name], capture_output=True, check=False)
            container.process.wait(timeout=30)
        assert container.process.stdout is not None
        container.process.stdout.close()


@pytest.fixture(scope="module")
def config_dir() -> Iterator[Path]:
    """The ConfigMap's configuration, mounted read-only, plus a module trusting a private CA.

    Readable by the container's user (pytest's directories are private to the test user).
    """
    _, container = _deployment_container()
    directory = Path(tempfile.mkdtemp(prefix="ssl-exporter-container-"))
    directory.chmod(0o755)
    configmap = next(d for d in yaml.safe_load_all((DEPLOYMENT.parent / "configmap.yaml").read_text())
                     if d["kind"] == "ConfigMap")
    config = yaml.safe_load(configmap["data"]["config.yml"])
    # The kubernetes prober resolves the in-cluster API at load time, which needs a pod.
    config["modules"] = {k: v for k, v in config["modules"].items() if v["prober"] != "kubernetes"}
    mount = next(m for m in container["volumeMounts"] if m["name"] == "config")["mountPath"]
    config["modules"]["private"] = {"prober": "tcp", "timeout": "5s",
                                    "tls_config": {"ca_file": f"{mount}/root.pem"}}
    (directory / "config.yml").write_text(yaml.safe_dump(config))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


# ---- tests ------------------------------------------------------------------------------


def test_manifests_name_the_image_of_this_version() -> None:
    """deployment.yaml's image is the one built here, tagged with the version it holds."""
    _, container = _deployment_container()
    name, _, tag = container["image"].rpartition(":")
    (entry,) = yaml.safe_load((DEPLOYMENT.parent / "kustomization.yaml").read_text())["images"]
    assert entry["name"] == name  # kustomize points this name at the user's registry
    assert tag == entry["newTag"] == __version__


def test_image_runs_as_nobody_and_exposes_9219(image: str) -> None:
    config = _inspect_image()["Config"]
    pod, _ = _deployment_container()
    assert config["User"] == f"{pod['securityContext']['runAsUser']}:{pod['securityContext']['runAsGroup']}"
    assert list(config["ExposedPorts"]) == ["9219/tcp"]
    assert config["Entrypoint"] == ["/opt/ssl-exporter/bin/ssl-exporter"]
    version = _run([*PODMAN, "run", "--rm", *ulimit_flags(), *security_flags(), image, "--version"]).stdout
    assert version == f"ssl_exporter {__version__}\n"  # the package the build context holds
    # The system trust store the embedded default module verifies against is in the image,
    # and the wheel built in it carries the SPDX license expression of pyproject.toml.
    script = ("import ssl, importlib.metadata as m;"
              "print(ssl.create_default_context().cert_store_stats()['x509_ca']);"
              "print(m.metadata('ssl_exporter')['License-Expression'])")
    ca_count, license_expression = _run([*PODMAN, "run", "--rm", *ulimit_flags(), *security_flags(),
                                         "--entrypoint=/opt/ssl-exporter/bin/python", image, "-c", script]
                                        ).stdout.split()
    assert int(ca_count) > 50
    assert license_expression == "Apache-2.0"


def test_container_probes_serves_metrics_and_stops_on_sigterm(image: str, config_dir: Path, tmp_path: Path) -> None:
    pod, container_spec = _deployment_container()
    root = make_root("Container Test Root")
    (config_dir / "root.pem").write_bytes(root.pem)
    (config_dir / "root.pem").chmod(0o644)
    leaf = root.issue("localhost", dns=("localhost",), not_after=NOW + 40 * DAY)
    cert, key = leaf.write(tmp_path, "nginx", (root,))
    mount = next(m for m in container_spec["volumeMounts"] if m["name"] == "config")["mountPath"]
    args = [a for a in container_spec["args"] if not a.startswith("--web.listen-address=")]
    flags = [*security_flags(), "-v", f"{config_dir}:{mount}:ro"]

    with run_nginx(tmp_path / "nginx", {"site": Site(cert, key)}) as ports, running(flags, args) as container:
        proc = Path(f"/proc/{container.pid()}")
        status = {name: value.split() for name, _, value in
                  (line.partition(":") for line in (proc / "status").read_text().splitlines())}
        # The process is the manifest's user, with no capabilities and no way to gain any.
        assert status["Uid"] == [str(pod["securityContext"]["runAsUser"])] * 4
        assert status["Gid"][0] == str(pod["securityContext"]["runAsGroup"])
        assert status["CapEff"] == ["0000000000000000"] and status["CapPrm"] == ["0000000000000000"]
        assert status["NoNewPrivs"] == ["1"]
        root_mount = next(line.split() for line in (proc / "mountinfo").read_text().splitlines()
                          if line.split()[4] == "/")
        assert "ro" in root_mount[5].split(","), root_mount

        assert container.get("/-/healthy")[0] == 200
        assert container.get("/-/ready")[0] == 200

        target = f"127.0.0.1:{ports['site']}"
        code, text = container.get(f"/probe?target={target}&module=private&hostname=localhost")
        assert code == 200, text
        samples = Samples(text)
        assert samples.get("ssl_probe_success") == 1
        assert samples.get("ssl_chain_valid") == 1
        assert samples.get("ssl_cert_not_after_timestamp_seconds", position="0") == leaf.not_after
        # The ConfigMap's https module trusts the image's system store, which knows no test
        # CA: the chain is untrusted, and its certificates are reported all the same.
        code, text = container.get(f"/probe?target={target}&module=https&hostname=localhost")
        samples = Samples(text)
        assert samples.errors() == {("verify", "unknown_issuer")}
        assert samples.get("ssl_handshake_success") == 1
        assert samples.get("ssl_cert_not_after_timestamp_seconds", position="0") == leaf.not_after

        code, metrics = container.get("/metrics")
        assert code == 200
        own = Samples(metrics)
        assert own.get("ssl_exporter_config_last_reload_successful") == 1
        assert any(s.name.startswith("process_") for s in own.samples)  # the process collector reads /proc

        shutdown_bound = 15.0  # --web.shutdown-timeout's default; the pod's grace period is 30 s
        started = time.monotonic()
        _run([*PODMAN, "kill", "--signal=TERM", container.name])
        exit_code = container.process.wait(timeout=shutdown_bound + 5)
        stopped_in = time.monotonic() - started
        assert container.process.stdout is not None
        container.log += container.process.stdout.readlines()
    print(f"stopped on SIGTERM in {stopped_in:.2f}s")
    assert exit_code == 0, "".join(container.log[-20:])
    assert stopped_in < shutdown_bound
    # --log.format=json from the manifest: one JSON object a line, ending with the drain.
    messages = [json.loads(line)["msg"] for line in container.log if line.startswith("{")]
    assert messages[-2:] == ["shutting down", "stopped"], messages
