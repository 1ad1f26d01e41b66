"""Real STARTTLS servers from Debian packages, run by the tests on loopback.

Each daemon runs in the foreground as a child process of the test, in a session of its own
(so that stopping it also stops the workers it forked), with its configuration, data and
logs in a directory of its own; none is a system service. Each function is a context
manager that yields ``{listener name: port}`` once every listener answers, and stops the
daemon on exit.

None of them takes listening sockets from its parent as simply as nginx does (nginx.py);
only Dovecot can at all, through systemd socket activation. So ports are picked free just
before the start (a port taken meanwhile fails the start loudly), and readiness is a
bounded poll: connect, and read the greeting where the protocol has one.

A missing binary raises :class:`DaemonError` naming the Debian package: the tests fail,
they do not skip.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from pathlib import Path

START_TIMEOUT = 30.0  # seconds for every listener of one daemon to answer
STOP_TIMEOUT = 10.0
IS_ROOT = os.geteuid() == 0

Ports = dict[str, int]


class DaemonError(RuntimeError):
    """A daemon is missing, or did not start."""


@contextmanager
def base_directory() -> Iterator[Path]:
    """A directory for the daemons' files that their unprivileged users can traverse.

    pytest's own temporary directories are private to the test user (mode 0700), but
    postgres, for one, runs as its own user.
    """
    path = Path(tempfile.mkdtemp(prefix="ssl-exporter-daemons-"))
    path.chmod(0o755)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def require(path: str, package: str) -> str:
    if not os.access(path, os.X_OK):
        raise DaemonError(f"{path} not found: install the Debian package {package} (tests/debian-packages.txt)")
    return path


def free_ports(*names: str) -> Ports:
    """Distinct loopback ports that are free now (all bound at once, then released)."""
    with ExitStack() as stack:
        sockets = {name: stack.enter_context(socket.socket()) for name in names}
        for sock in sockets.values():
            sock.bind(("127.0.0.1", 0))
        return {name: sock.getsockname()[1] for name, sock in sockets.items()}


@contextmanager
def run(
    name: str,
    argv: list[str],
    directory: Path,
    ports: Ports,
    greetings: Mapping[str, bytes],
    *,
    user: str | None = None,
    stop_signal: int = signal.SIGTERM,
) -> Iterator[Ports]:
    """Run ``argv`` until the context exits; yield ``ports`` once each one answers.

    ``greetings`` maps a listener to the bytes its greeting starts with; listeners not in
    it (the client speaks first, or implicit TLS) are ready when they accept a connection.
    """
    log = directory / f"{name}.out"
    with open(log, "wb") as out:
        process = subprocess.Popen(argv, cwd=directory, stdin=subprocess.DEVNULL, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True, user=user)
    try:
        deadline = time.monotonic() + START_TIMEOUT
        for listener, port in ports.items():
            _wait_until_serving(name, process, log, port, greetings.get(listener), deadline)
        yield ports
    finally:
        _stop(process, stop_signal)


def _wait_until_serving(name: str, process: subprocess.Popen[bytes], log: Path, port: int,
                        greeting: bytes | None, deadline: float) -> None:
    while True:
        if process.poll() is not None:
            raise DaemonError(f"{name} exited with status {process.returncode} while starting:\n{_tail(log)}")
        if _answers(port, greeting):
            return
        if time.monotonic() > deadline:
            raise DaemonError(f"{name} did not answer on 127.0.0.1:{port} within {START_TIMEOUT:g}s:\n{_tail(log)}")
        time.sleep(0.05)


def _answers(port: int, greeting: bytes | None) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
            if greeting is None:
                return True
            received = b""
            while len(received) < len(greeting) and (data := sock.recv(len(greeting) - len(received))):
                received += data
            return received == greeting
    except OSError:
        return False


def _stop(process: subprocess.Popen[bytes], stop_signal: int) -> None:
    try:
        os.killpg(process.pid, stop_signal)
        process.wait(STOP_TIMEOUT)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass  # gone already, or too slow: SIGKILL below
    # The whole session: workers that outlived their master, or a master that lingered.
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _tail(log: Path, lines: int = 30) -> str:
    try:
        return "\n".join(log.read_text(errors="replace").splitlines()[-lines:])
    except OSError as exc:
        return f"(no log: {exc})"


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- the daemons ---------------------------------------------------------------------------
#
# Each takes its own directory, a certificate chain file (leaf first) and its key.


_POSTFIX_MAIN = """\
compatibility_level = 3.6
queue_directory = {dir}/queue
data_directory = {dir}/data
myhostname = {hostname}
mydestination =
local_recipient_maps =
alias_maps =
alias_database =
inet_protocols = ipv4
smtpd_tls_security_level = may
smtpd_tls_chain_files = {key}, {cert}
maillog_file_prefixes = {dir}
maillog_file = {dir}/maillog
"""

# Only the services smtpd needs to get as far as STARTTLS.
_POSTFIX_MASTER = """\
127.0.0.1:{smtp} inet n - n - - smtpd
127.0.0.1:{smtps} inet n - n - - smtpd -o smtpd_tls_wrappermode=yes
postlog unix-dgram n - n - 1 postlogd
tlsmgr unix - - n 1000? 1 tlsmgr
anvil unix - - n - 1 anvil
proxymap unix - - n - - proxymap
"""


@contextmanager
def postfix(directory: Path, cert: Path, key: Path, hostname: str) -> Iterator[Ports]:
    """Postfix's master in the foreground (-d), smtpd on "smtp" and "smtps" (wrapper mode)."""
    master = require("/usr/lib/postfix/sbin/master", "postfix")
    conf = _mkdir(directory / "conf")
    # The queue directories smtpd needs, with Postfix's owners: made here because
    # "postfix check", which would make them all, takes about 3 s.
    _mkdir(directory / "queue" / "pid")
    for owned_by_postfix in ("queue/public", "queue/private", "data"):
        shutil.chown(_mkdir(directory / owned_by_postfix), "postfix")
    ports = free_ports("smtp", "smtps")
    (conf / "main.cf").write_text(_POSTFIX_MAIN.format(dir=directory, hostname=hostname, key=key, cert=cert))
    (conf / "master.cf").write_text(_POSTFIX_MASTER.format(**ports))
    # Postfix rereads a config file until its mtime is in the past (it may still be being
    # written), which costs about 2 s on a fresh one: backdate them.
    an_hour_ago = time.time() - 3600
    for name in ("main.cf", "master.cf"):
        os.utime(conf / name, (an_hour_ago, an_hour_ago))
    with run("postfix", [master, "-c", str(conf), "-d"], directory, ports, {"smtp": b"220"}) as ready:
        yield ready


_DOVECOT_CONF = """\
protocols = imap pop3 sieve
listen = 127.0.0.1
base_dir = {dir}/run
state_dir = {dir}/state
log_path = {dir}/dovecot.log
ssl = yes
ssl_cert = <{cert}
ssl_key = <{key}
mail_location = maildir:{dir}/mail
passdb {{
  driver = static
  args = password=unused
}}
userdb {{
  driver = static
  args = uid=nobody gid=nogroup home={dir}/home
}}
service imap-login {{
  inet_listener imap {{
    port = {imap}
  }}
  inet_listener imaps {{
    port = {imaps}
  }}
}}
service pop3-login {{
  inet_listener pop3 {{
    port = {pop3}
  }}
  inet_listener pop3s {{
    port = {pop3s}
  }}
}}
service managesieve-login {{
  inet_listener sieve {{
    port = {sieve}
  }}
}}
"""


@contextmanager
def dovecot(directory: Path, cert: Path, key: Path) -> Iterator[Ports]:
    """Dovecot in the foreground (-F): IMAP, POP3, ManageSieve, and IMAPS/POP3S."""
    binary = require("/usr/sbin/dovecot", "dovecot-imapd")
    require("/usr/lib/dovecot/pop3-login", "dovecot-pop3d")
    require("/usr/lib/dovecot/managesieve-login", "dovecot-managesieved")
    ports = free_ports("imap", "imaps", "pop3", "pop3s", "sieve")
    conf = directory / "dovecot.conf"
    conf.write_text(_DOVECOT_CONF.format(dir=directory, cert=cert, key=key, **ports))
    greetings = {"imap": b"* OK", "pop3": b"+OK", "sieve": b'"IMPLEMENTATION"'}
    with run("dovecot", [binary, "-F", "-c", str(conf)], directory, ports, greetings) as ready:
        yield ready


@contextmanager
def postgresql(directory: Path, cert: Path, key: Path) -> Iterator[Ports]:
    """initdb, then postgres with ssl = on, as the postgres user (it refuses to run as root)."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
    if not found:
        raise DaemonError("/usr/lib/postgresql/*/bin/postgres not found: install the Debian package postgresql")
    bin_dir = Path(found[-1]).parent
    user = "postgres" if IS_ROOT else None
    if user is not None:
        for path in (directory, cert, key):
            shutil.chown(path, user)
    key.chmod(0o600)  # postgres refuses a key others can read
    data = directory / "data"
    initdb = subprocess.run([str(bin_dir / "initdb"), "-D", str(data), "--auth=trust", "--username=postgres",
                             "--no-sync", "--no-instructions"], capture_output=True, text=True, user=user)
    if initdb.returncode != 0:
        raise DaemonError(f"initdb failed: {initdb.stdout}{initdb.stderr}")
    ports = free_ports("postgres")
    settings = {"listen_addresses": "127.0.0.1", "port": ports["postgres"], "unix_socket_directories": directory,
                "ssl": "on", "ssl_cert_file": cert, "ssl_key_file": key, "fsync": "off"}
    argv = [str(bin_dir / "postgres"), "-D", str(data)]
    for name, value in settings.items():
        argv += ["-c", f"{name}={value}"]
    # SIGINT is the "fast" shutdown; SIGTERM would wait for clients to leave.
    with run("postgres", argv, directory, ports, {}, user=user, stop_signal=signal.SIGINT) as ready:
        yield ready


def _version_key(path: str) -> int:
    version = Path(path).parent.parent.name
    return int(version) if version.isdigit() else 0


@contextmanager
def mariadb(directory: Path, cert: Path, key: Path) -> Iterator[Ports]:
    """mariadbd with TLS, on an empty data directory.

    --skip-grant-tables spares mariadb-install-db (seconds): the handshake, which is all a
    probe sees, needs no system tables.
    """
    binary = require("/usr/sbin/mariadbd", "mariadb-server")
    data = _mkdir(directory / "data")
    ports = free_ports("mysql")
    argv = [binary, "--no-defaults", f"--datadir={data}", "--bind-address=127.0.0.1", f"--port={ports['mysql']}",
            f"--socket={directory}/mysqld.sock", f"--pid-file={directory}/mysqld.pid",
            f"--log-error={directory}/mariadb.log", "--skip-grant-tables", "--skip-log-bin",
            "--innodb-buffer-pool-size=8M", f"--ssl-cert={cert}", f"--ssl-key={key}"]
    if IS_ROOT:
        argv.append("--user=root")  # without it mariadbd refuses to run as root
    with run("mariadb", argv, directory, ports, {}) as ready:
        yield ready


_SLAPD_CONF = """\
include /etc/ldap/schema/core.schema
pidfile {dir}/slapd.pid
argsfile {dir}/slapd.args
TLSCertificateFile {cert}
TLSCertificateKeyFile {key}
"""


@contextmanager
def slapd(directory: Path, cert: Path, key: Path) -> Iterator[Ports]:
    """OpenLDAP's slapd (no database: StartTLS needs none) on ldap:// and ldaps://."""
    binary = require("/usr/sbin/slapd", "slapd")
    conf = directory / "slapd.conf"
    conf.write_text(_SLAPD_CONF.format(dir=directory, cert=cert, key=key))
    ports = free_ports("ldap", "ldaps")
    urls = f"ldap://127.0.0.1:{ports['ldap']}/ ldaps://127.0.0.1:{ports['ldaps']}/"
    # -d keeps slapd in the foreground; level 0 logs nothing more.
    with run("slapd", [binary, "-d", "0", "-h", urls, "-f", str(conf)], directory, ports, {}) as ready:
        yield ready


# local_enable: vsftpd refuses to start with no kind of login enabled. seccomp_sandbox=NO:
# under vsftpd 3.0.3's seccomp filter the session process fails after "234" and answers
# the ClientHello with plain text (a system call of today's OpenSSL or libc it forbids).
_VSFTPD_CONF = """\
listen=YES
listen_ipv6=NO
listen_address=127.0.0.1
listen_port={port}
background=NO
anonymous_enable=NO
local_enable=YES
secure_chroot_dir={dir}/empty
seccomp_sandbox=NO
ssl_enable=YES
implicit_ssl={implicit}
rsa_cert_file={cert}
rsa_private_key_file={key}
ssl_ciphers=HIGH
"""


@contextmanager
def vsftpd(directory: Path, cert: Path, key: Path) -> Iterator[Ports]:
    """Two vsftpd instances: "ftp" (AUTH TLS) and "ftps" (implicit TLS, a global setting)."""
    binary = require("/usr/sbin/vsftpd", "vsftpd")
    _mkdir(directory / "empty")
    ports = free_ports("ftp", "ftps")
    with ExitStack() as stack:
        for name, implicit in (("ftp", "NO"), ("ftps", "YES")):
            conf = directory / f"{name}.conf"
            conf.write_text(_VSFTPD_CONF.format(port=ports[name], dir=directory, cert=cert, key=key,
                                                implicit=implicit))
            greeting = {name: b"220"} if implicit == "NO" else {}
            stack.enter_context(run(f"vsftpd-{name}", [binary, str(conf)], directory, {name: ports[name]}, greeting))
        yield ports


_PROSODY_CONF = """\
run_as_root = {as_root}
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
certificates = "{dir}"
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {xmpp} }}
s2s_ports = {{ {xmpp-server} }}
c2s_direct_tls_ports = {{}}
s2s_direct_tls_ports = {{}}
legacy_ssl_ports = {{}}
modules_enabled = {{ "tls", "saslauth", "dialback", "disco" }}
modules_disabled = {{ "admin_shell", "admin_socket" }}
authentication = "internal_plain"
log = {{ info = "{dir}/prosody.log" }}
VirtualHost "{hostname}"
  ssl = {{ certificate = "{cert}", key = "{key}" }}
"""


@contextmanager
def prosody(directory: Path, cert: Path, key: Path, hostname: str) -> Iterator[Ports]:
    """Prosody in the foreground (-F), serving ``hostname`` on c2s ("xmpp") and s2s."""
    binary = require("/usr/bin/prosody", "prosody")
    _mkdir(directory / "data")
    ports = free_ports("xmpp", "xmpp-server")
    conf = directory / "prosody.cfg.lua"
    # As root, Prosody would otherwise refuse to start; it is the test's own process.
    conf.write_text(_PROSODY_CONF.format(as_root=str(IS_ROOT).lower(), dir=directory, hostname=hostname,
                                         cert=cert, key=key, **ports))
    with run("prosody", [binary, "-F", "--config", str(conf)], directory, ports, {}) as ready:
        yield ready
