"""Start, stop and describe the local services archiver runs against: Kafka, S3, Schema Registry.

Usage: infra/services {up|down|status|env} [kafka] [s3] [registry] [registry-tls]
       infra/services env --secure sasl_ssl|ssl|registry[,...]   (the settings of secured endpoints)

Everything comes from package registries, no Docker:
  kafka     Apache Kafka (KRaft, broker+controller in one JVM), jars from Maven Central; besides
            PLAINTEXT it listens on SASL_SSL (SCRAM-SHA-512, user `archiver`) and on SSL with
            client certificates required, with certificates of a local CA made at start (openssl)
  s3        LocalStack (S3 only) from PyPI, in its own virtualenv
  registry  Apicurio Registry (in-memory), Confluent-compatible API at /apis/ccompat/v7
  registry-tls  nginx (Debian's, unpacked by infra/tools) in front of the registry: HTTPS with the
            local CA's certificate, a client certificate required (mutual TLS) and HTTP basic auth
            (user `archiver`); started with the others when nginx is found (the tools folder or
            PATH), or when named

Downloads are cached under ~/.cache/archiver (and ~/.m2, ~/.cache/pip); pids, logs and data go
under the state folder (ARCHIVER_STATE_DIR, default <repo>/.state). `up` is idempotent and
`down` stops only the processes `up` started, by pid. Only the standard library is used so the
script runs before any virtualenv exists.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from string import Template

REPO = Path(__file__).resolve().parent.parent
INFRA = REPO / "infra"
KAFKA_VERSION = "4.1.2"
APICURIO_VERSION = "3.3.3"
LOCALSTACK_VERSION = "4.13.1"
DEPENDENCY_PLUGIN = "org.apache.maven.plugins:maven-dependency-plugin:3.8.1"
SERVICES = ("kafka", "s3", "registry", "registry-tls")


class ServiceError(Exception):
    """A problem the user must fix; printed as one line."""


@dataclass(frozen=True)
class Settings:
    state: Path
    cache: Path
    kafka_port: int
    controller_port: int
    kafka_sasl_port: int
    kafka_ssl_port: int
    s3_port: int
    registry_port: int
    registry_mgmt_port: int
    registry_tls_port: int
    tools: Path
    bucket: str
    prefix: str

    @classmethod
    def from_env(cls) -> Settings:
        env = os.environ
        cache_home = Path(env.get("XDG_CACHE_HOME", Path.home() / ".cache"))
        return cls(
            state=Path(env.get("ARCHIVER_STATE_DIR", REPO / ".state")).resolve(),
            cache=Path(env.get("ARCHIVER_CACHE_DIR", cache_home / "archiver")),
            kafka_port=_port("ARCHIVER_KAFKA_PORT", 9092),
            controller_port=_port("ARCHIVER_KAFKA_CONTROLLER_PORT", 9093),
            kafka_sasl_port=_port("ARCHIVER_KAFKA_SASL_PORT", 9094),
            kafka_ssl_port=_port("ARCHIVER_KAFKA_SSL_PORT", 9095),
            s3_port=_port("ARCHIVER_S3_PORT", 4566),
            registry_port=_port("ARCHIVER_REGISTRY_PORT", 8081),
            registry_mgmt_port=_port("ARCHIVER_REGISTRY_MANAGEMENT_PORT", 9000),
            registry_tls_port=_port("ARCHIVER_REGISTRY_TLS_PORT", 8443),
            tools=Path(env.get("ARCHIVER_TOOLS_DIR", cache_home / "archiver" / "tools")),
            bucket=env.get("ARCHIVER_BUCKET", "archiver"),
            prefix=env.get("ARCHIVER_PREFIX", "archive"),
        )


def _port(name: str, default: int) -> int:
    raw = os.environ.get(name, str(default))
    if not raw.isdigit() or not 0 < int(raw) < 65536:
        raise ServiceError(f"{name}={raw!r} is not a TCP port number")
    return int(raw)


# --- processes -------------------------------------------------------------------------------


def _start_time(pid: int) -> str | None:
    """The kernel's start time of `pid`, so a recycled pid is never mistaken for ours."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


class Process:
    """A background process recorded in <state>/<name>/pid as 'pid start-time'."""

    def __init__(self, settings: Settings, name: str):
        self.dir = settings.state / name
        self.pidfile = self.dir / "pid"
        self.log = self.dir / f"{name}.log"
        self.name = name

    def pid(self) -> int | None:
        try:
            pid_text, started = self.pidfile.read_text().split()
        except (OSError, ValueError):
            return None
        pid = int(pid_text)
        return pid if _start_time(pid) == started else None

    def start(self, argv: list[str], env: dict[str, str], cwd: Path | None = None) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        with open(self.log, "ab") as log:
            proc = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=env, cwd=cwd, start_new_session=True,
            )
        self.pidfile.write_text(f"{proc.pid} {_start_time(proc.pid)}\n")
        self.started_at = time.monotonic()

    def stop(self, timeout: float = 20.0) -> bool:
        pid = self.pid()
        self.pidfile.unlink(missing_ok=True)
        if pid is None:
            return False
        _signal_group(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _start_time(pid) is not None:
            if _reap(pid):
                break
            time.sleep(0.1)
        if _start_time(pid) is not None:
            _signal_group(pid, signal.SIGKILL)
            _reap(pid)
        return True

    def exited(self) -> bool:
        pid = self.pid()
        return pid is None or _reap(pid)

    def tail(self, lines: int = 5) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(line.strip() for line in text[-lines:])


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except ProcessLookupError:
        pass
    except PermissionError:
        os.kill(pid, sig)


def _reap(pid: int) -> bool:
    """True when pid has exited (reaping it if it is our child)."""
    try:
        done, _ = os.waitpid(pid, os.WNOHANG)
        return done == pid
    except ChildProcessError:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def _port_busy(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _wait(what: Process, ready, timeout: float) -> None:
    """Poll `ready()` until it is true; fail early if the process dies."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if what.exited():
            raise ServiceError(f"{what.name} exited during start-up: {what.tail()} (log: {what.log})")
        try:
            if ready():
                return
        except OSError:
            pass
        time.sleep(0.25)
    raise ServiceError(f"{what.name} not ready after {timeout:.0f}s (log: {what.log})")


def _run(argv: list[str], what: str, **kwargs) -> subprocess.CompletedProcess:
    try:
        result = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    except FileNotFoundError:
        raise ServiceError(f"{what}: {argv[0]} not found on PATH") from None
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip().splitlines()
        last = next((line for line in reversed(detail) if "ERROR" in line), detail[-1] if detail else "")
        raise ServiceError(f"{what} failed (exit {result.returncode}): {last.strip()}")
    return result


# --- Java ------------------------------------------------------------------------------------


def _java_major(java: str) -> int:
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True).stderr
    except OSError:
        return 0
    match = re.search(r'version "(\d+)', out)
    return int(match.group(1)) if match else 0


def _find_java(minimum: int) -> str:
    """A java binary of at least `minimum`: JAVA_HOME, PATH, then the JDKs under /usr/lib/jvm."""
    candidates = []
    if os.environ.get("JAVA_HOME"):
        candidates.append(str(Path(os.environ["JAVA_HOME"]) / "bin" / "java"))
    if shutil.which("java"):
        candidates.append(shutil.which("java"))
    candidates += sorted(str(p) for p in Path("/usr/lib/jvm").glob("*/bin/java"))
    for java in candidates:
        if _java_major(java) >= minimum:
            return java
    raise ServiceError(f"Java {minimum}+ not found (looked at JAVA_HOME, PATH and /usr/lib/jvm); install a JDK {minimum}+")


# --- Kafka -----------------------------------------------------------------------------------


def _kafka_libs(s: Settings) -> Path:
    libs = s.cache / f"kafka-{KAFKA_VERSION}" / "libs"
    if (libs.parent / "complete").exists():
        return libs
    if not shutil.which("mvn"):
        raise ServiceError("Maven (mvn) not found on PATH; it fetches the Kafka jars from Maven Central")
    print(f"fetching Kafka {KAFKA_VERSION} jars from Maven Central into {libs}", file=sys.stderr)
    shutil.rmtree(libs, ignore_errors=True)
    _run(["mvn", "-B", "-q", "-f", str(INFRA / "kafka" / "pom.xml"), f"-Dkafka.version={KAFKA_VERSION}",
          f"{DEPENDENCY_PLUGIN}:copy-dependencies", "-DincludeScope=runtime", f"-DoutputDirectory={libs}"],
         "downloading Kafka jars")
    (libs.parent / "complete").touch()
    return libs


def _kafka_metadata_ok(port: int) -> bool:
    """Send a Metadata v1 request for all topics; true when the broker answers with itself."""
    client = b"archiver-services"
    body = struct.pack(">hhih", 3, 1, 1, len(client)) + client + struct.pack(">i", -1)
    with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
        sock.sendall(struct.pack(">i", len(body)) + body)
        header = _recv_exact(sock, 4)
        payload = _recv_exact(sock, struct.unpack(">i", header)[0])
    correlation, brokers = struct.unpack(">ii", payload[:8])
    return correlation == 1 and brokers >= 1


def _recv_exact(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


SCRAM_USER, SCRAM_PASSWORD = "archiver", "archiver-secret"
"""The SCRAM-SHA-512 user of the SASL_SSL listener (a local test credential)."""


def tls_dir(s: Settings) -> Path:
    return s.state / "kafka" / "tls"


def _tls_material(s: Settings) -> Path:
    """A local CA, the broker's certificate (for 127.0.0.1 and localhost) and a client certificate,
    as PEM files under the state folder; made once (openssl)."""
    out = tls_dir(s)
    if (out / "complete").exists():
        return out
    if not shutil.which("openssl"):
        raise ServiceError("openssl not found on PATH; it makes the certificates of Kafka's SSL listeners")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)

    def openssl(*args: str) -> None:
        _run(["openssl", *args], "making Kafka's TLS certificates", cwd=out)

    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=archiver local CA",
            "-keyout", "ca.key", "-out", "ca.pem")
    (out / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    for name, cn, extra in (("broker", "localhost", ["-extfile", "san.cnf"]), ("client", "archiver", [])):
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={cn}", "-keyout", f"{name}.key.pem",
                "-out", f"{name}.csr")
        openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
                "-days", "3650", "-out", f"{name}.cert.pem", *extra)
        openssl("pkcs8", "-topk8", "-nocrypt", "-in", f"{name}.key.pem", "-out", f"{name}.key")
    # the broker's PEM keystore: its PKCS#8 key, then its certificate chain
    (out / "broker.pem").write_text((out / "broker.key").read_text() + (out / "broker.cert.pem").read_text()
                                    + (out / "ca.pem").read_text())
    (out / "complete").touch()
    return out


def kafka_up(s: Settings) -> Process:
    proc = Process(s, "kafka")
    java = _find_java(17)
    libs = _kafka_libs(s)
    classpath = f"{libs}/*"
    data = proc.dir / "data"
    props = proc.dir / "server.properties"
    template = Template((INFRA / "kafka" / "server.properties.template").read_text())
    props.parent.mkdir(parents=True, exist_ok=True)
    tls = _tls_material(s)
    props.write_text(template.substitute(port=s.kafka_port, controller_port=s.controller_port, data_dir=data,
                                         sasl_port=s.kafka_sasl_port, ssl_port=s.kafka_ssl_port, tls_dir=tls))
    if not (data / "meta.properties").exists():
        cluster_id = _run([java, "-cp", classpath, "kafka.tools.StorageTool", "random-uuid"],
                          "generating a Kafka cluster id").stdout.strip().splitlines()[-1]
        _run([java, "-cp", classpath, "kafka.tools.StorageTool", "format", "--standalone",
              "--ignore-formatted", "-t", cluster_id, "-c", str(props),
              "--add-scram", f"SCRAM-SHA-512=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"],
             "formatting Kafka storage")
    heap = os.environ.get("ARCHIVER_KAFKA_HEAP", "512m")
    proc.start([java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseG1GC", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={INFRA / 'kafka' / 'log4j2.properties'}",
                "-cp", classpath, "kafka.Kafka", str(props)], env=dict(os.environ))
    return proc


# --- LocalStack (S3) -------------------------------------------------------------------------


def _localstack_python(s: Settings) -> Path:
    venv = s.cache / f"localstack-{LOCALSTACK_VERSION}"
    python = venv / "bin" / "python"
    if (venv / "complete").exists():
        return python
    print(f"installing LocalStack {LOCALSTACK_VERSION} into {venv}", file=sys.stderr)
    shutil.rmtree(venv, ignore_errors=True)
    _run([sys.executable, "-m", "venv", str(venv)], "creating the LocalStack virtualenv")
    _run([str(python), "-m", "pip", "install", "-q", "-r", str(REPO / "localstack" / "requirements.txt")],
         "installing LocalStack from PyPI")
    (venv / "complete").touch()
    return python


def _localstack_compat(python: Path) -> None:
    """Install localstack/py311_compat.py into LocalStack's virtualenv, loaded by a .pth file at
    start-up (LocalStack 4.13's KMS needs Python 3.12's uuid5; see that file)."""
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    shutil.copyfile(REPO / "localstack" / "py311_compat.py", Path(site) / "archiver_py311_compat.py")
    (Path(site) / "archiver_py311_compat.pth").write_text("import archiver_py311_compat\n")


def s3_up(s: Settings) -> Process:
    proc = Process(s, "s3")
    python = _localstack_python(s)
    _localstack_compat(python)
    root = proc.dir / "root"
    hooks = root / "etc" / "localstack" / "init"
    shutil.rmtree(hooks, ignore_errors=True)
    shutil.copytree(REPO / "localstack" / "init", hooks)
    env = dict(os.environ,
               OVERRIDE_IN_DOCKER="0", SERVICES="s3,kms", DNS_ADDRESS="0", FILESYSTEM_ROOT=str(root),
               GATEWAY_LISTEN=f"127.0.0.1:{s.s3_port}", S3_SKIP_SIGNATURE_VALIDATION="0",
               SKIP_SSL_CERT_DOWNLOAD="1", DISABLE_EVENTS="1", LOCALSTACK_TELEMETRY_DISABLED="1",
               ARCHIVER_BUCKET=s.bucket, ARCHIVER_S3_PORT=str(s.s3_port))
    env.pop("AWS_ENDPOINT_URL", None)
    proc.start([str(python), "-m", "localstack.runtime.main"], env=env, cwd=proc.dir)
    return proc


def _s3_ready(port: int) -> bool:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/_localstack/init/ready", timeout=2) as resp:
        state = json.load(resp)
    failed = [x["name"] for x in state.get("scripts", []) if x.get("state") == "ERROR"]
    if failed:
        raise ServiceError(f"LocalStack init hook failed: {', '.join(failed)}")
    return bool(state.get("completed"))


# --- Apicurio Registry -----------------------------------------------------------------------


def _apicurio_home(s: Settings) -> Path:
    home = s.cache / f"apicurio-registry-{APICURIO_VERSION}"
    if (home / "complete").exists():
        return home
    if not shutil.which("mvn"):
        raise ServiceError("Maven (mvn) not found on PATH; it fetches Apicurio Registry from Maven Central")
    print(f"fetching Apicurio Registry {APICURIO_VERSION} from Maven Central into {home}", file=sys.stderr)
    shutil.rmtree(home, ignore_errors=True)
    download = s.cache / "downloads"
    artifact = f"io.apicurio:apicurio-registry-app:{APICURIO_VERSION}:tar.gz:all"
    _run(["mvn", "-B", "-q", "-f", str(INFRA / "kafka" / "pom.xml"), f"{DEPENDENCY_PLUGIN}:copy",
          f"-Dartifact={artifact}", f"-DoutputDirectory={download}"], "downloading Apicurio Registry")
    archive = download / f"apicurio-registry-app-{APICURIO_VERSION}-all.tar.gz"
    with tarfile.open(archive) as tar:
        tar.extractall(home, filter="data")
    archive.unlink()
    (home / "complete").touch()
    return home


def registry_up(s: Settings) -> Process:
    proc = Process(s, "registry")
    java = _find_java(21)
    home = _apicurio_home(s)
    heap = os.environ.get("ARCHIVER_REGISTRY_HEAP", "384m")
    proc.start([java, f"-Xmx{heap}", "-XX:+UseSerialGC",
                "-Dquarkus.http.host=127.0.0.1", f"-Dquarkus.http.port={s.registry_port}",
                "-Dquarkus.management.host=127.0.0.1", f"-Dquarkus.management.port={s.registry_mgmt_port}",
                "-Dquarkus.http.access-log.enabled=false",
                "-jar", str(home / "quarkus-run.jar")], env=dict(os.environ), cwd=proc.dir)
    return proc


def _registry_ready(s: Settings) -> bool:
    url = f"http://127.0.0.1:{s.registry_port}/apis/ccompat/v7/subjects"
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


# --- the registry over HTTPS with basic auth (nginx) -----------------------------------------

REGISTRY_USER, REGISTRY_PASSWORD = "archiver", "registry-secret"
"""The basic-auth user of the HTTPS registry endpoint (a local test credential)."""

NGINX_CONF = Template("""\
daemon off;
master_process off;
worker_processes 1;
pid "$dir/nginx.pid";
error_log stderr warn;
events { worker_connections 256; }
http {
  access_log off;
  client_body_temp_path "$dir/tmp/body";
  proxy_temp_path "$dir/tmp/proxy";
  fastcgi_temp_path "$dir/tmp/fastcgi";
  uwsgi_temp_path "$dir/tmp/uwsgi";
  scgi_temp_path "$dir/tmp/scgi";
  server {
    listen 127.0.0.1:$port ssl;
    ssl_certificate "$dir/server.pem";
    ssl_certificate_key "$tls/broker.key";
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_client_certificate "$tls/ca.pem";
    ssl_verify_client on;
    auth_basic "schema registry";
    auth_basic_user_file "$dir/htpasswd";
    location / {
      proxy_pass http://127.0.0.1:$upstream;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Authorization "";
    }
  }
}
""")


def _nginx(s: Settings) -> str | None:
    """nginx from the tools folder (infra/tools unpacks Debian's) or PATH, if any."""
    unpacked = s.tools / "nginx"
    if os.access(unpacked, os.X_OK):
        return str(unpacked)
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


def registry_tls_up(s: Settings) -> Process:
    nginx = _nginx(s)
    if nginx is None:
        raise ServiceError(f"nginx not found in {s.tools} or on PATH; run infra/tools (it unpacks Debian's)")
    proc = Process(s, "registry-tls")
    tls = _tls_material(s)
    for sub in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (proc.dir / "tmp" / sub).mkdir(parents=True, exist_ok=True)
    salt = os.urandom(8)
    digest = hashlib.sha1(REGISTRY_PASSWORD.encode() + salt).digest()
    (proc.dir / "htpasswd").write_text(f"{REGISTRY_USER}:{{SSHA}}{base64.b64encode(digest + salt).decode()}\n")
    # the local CA's server certificate (127.0.0.1 and localhost), which the broker uses too
    (proc.dir / "server.pem").write_text((tls / "broker.cert.pem").read_text() + (tls / "ca.pem").read_text())
    conf = proc.dir / "nginx.conf"
    conf.write_text(NGINX_CONF.substitute(dir=proc.dir, tls=tls, port=s.registry_tls_port,
                                          upstream=s.registry_port))
    proc.start([nginx, "-p", str(proc.dir), "-e", "stderr", "-c", str(conf)], env=dict(os.environ), cwd=proc.dir)
    return proc


def _registry_tls_ready(s: Settings) -> bool:
    context = ssl.create_default_context(cafile=str(tls_dir(s) / "ca.pem"))
    context.load_cert_chain(tls_dir(s) / "client.cert.pem", tls_dir(s) / "client.key")
    request = urllib.request.Request(f"https://127.0.0.1:{s.registry_tls_port}/apis/ccompat/v7/subjects")
    token = base64.b64encode(f"{REGISTRY_USER}:{REGISTRY_PASSWORD}".encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=2, context=context) as resp:
        return resp.status == 200


# --- commands --------------------------------------------------------------------------------


def _ports(s: Settings, name: str) -> list[int]:
    return {"kafka": [s.kafka_port, s.controller_port, s.kafka_sasl_port, s.kafka_ssl_port], "s3": [s.s3_port],
            "registry": [s.registry_port, s.registry_mgmt_port], "registry-tls": [s.registry_tls_port]}[name]


def _ready(s: Settings, name: str) -> bool:
    try:
        if name == "kafka":
            return _kafka_metadata_ok(s.kafka_port)
        if name == "s3":
            return _s3_ready(s.s3_port)
        if name == "registry-tls":
            return _registry_tls_ready(s)
        return _registry_ready(s)
    except (OSError, ValueError, struct.error):
        return False


def up(s: Settings, names: list[str]) -> None:
    starters = {"kafka": kafka_up, "s3": s3_up, "registry": registry_up, "registry-tls": registry_tls_up}
    todo = [n for n in names if Process(s, n).pid() is None]
    for name in todo:  # check every port before starting anything
        for port in _ports(s, name):
            if _port_busy(port):
                raise ServiceError(f"{name}: port {port} is already in use by another process; "
                                   f"free it or set the ARCHIVER_*_PORT variables (see infra/services env)")
    started: list[Process] = []
    try:
        for name in todo:
            started.append(starters[name](s))
        for proc in started:
            _wait(proc, lambda n=proc.name: _ready(s, n), timeout=180)
            print(f"{proc.name}: ready {time.monotonic() - proc.started_at:.1f}s after start", file=sys.stderr)
    except BaseException:
        for proc in started:
            proc.stop(timeout=5)
        raise
    for name in names:
        if name not in todo:
            print(f"{name}: already running (pid {Process(s, name).pid()})", file=sys.stderr)


def down(s: Settings, names: list[str]) -> None:
    for name in names:
        stopped = Process(s, name).stop()
        print(f"{name}: {'stopped' if stopped else 'not running'}", file=sys.stderr)


def status(s: Settings, names: list[str]) -> int:
    code = 0
    for name in names:
        pid = Process(s, name).pid()
        ready = pid is not None and _ready(s, name)
        state = "ready" if ready else ("starting" if pid else "stopped")
        code |= 0 if ready else 1
        print(f"{name:12} {state:9} pid={pid or '-'} ports={','.join(map(str, _ports(s, name)))}")
    return code


def env_exports(s: Settings, secure: str | None = None) -> str:
    values = {
        "ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{s.kafka_port}",
        "ARCHIVER_SCHEMA_REGISTRY_URL": f"http://127.0.0.1:{s.registry_port}/apis/ccompat/v7",
        "ARCHIVER_ARCHIVE_URL": f"s3://{s.bucket}/{s.prefix}",
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{s.s3_port}",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "AWS_DEFAULT_REGION": "us-east-1",
        # The embedded Iceberg catalog: a SQL catalog on SQLite under the state folder.
        "ARCHIVER_CATALOG_TYPE": "sql",
        "ARCHIVER_CATALOG_URI": f"sqlite:///{s.state / 'catalog.db'}",
    }
    tls = tls_dir(s)
    choices = set((secure or "").split(",")) - {""}
    if choices - {"sasl_ssl", "ssl", "registry"} or {"sasl_ssl", "ssl"} <= choices or (secure is not None
                                                                                       and not choices):
        raise ServiceError(f"env --secure {secure!r}: choose sasl_ssl or ssl, and/or registry (e.g. sasl_ssl,registry)")
    if "registry" in choices:
        values |= {"ARCHIVER_SCHEMA_REGISTRY_URL": f"https://127.0.0.1:{s.registry_tls_port}/apis/ccompat/v7",
                   "ARCHIVER_SCHEMA_REGISTRY_BASIC_AUTH_USER_INFO": f"{REGISTRY_USER}:{REGISTRY_PASSWORD}",
                   "ARCHIVER_SCHEMA_REGISTRY_SSL_CA_LOCATION": str(tls / "ca.pem"),
                   "ARCHIVER_SCHEMA_REGISTRY_SSL_CERTIFICATE_LOCATION": str(tls / "client.cert.pem"),
                   "ARCHIVER_SCHEMA_REGISTRY_SSL_KEY_LOCATION": str(tls / "client.key")}
    if "sasl_ssl" in choices:
        values |= {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{s.kafka_sasl_port}",
                   "ARCHIVER_KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "ARCHIVER_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
                   "ARCHIVER_KAFKA_SASL_USERNAME": SCRAM_USER, "ARCHIVER_KAFKA_SASL_PASSWORD": SCRAM_PASSWORD,
                   "ARCHIVER_KAFKA_SSL_CA_LOCATION": str(tls / "ca.pem")}
    elif "ssl" in choices:
        values |= {"ARCHIVER_KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:{s.kafka_ssl_port}",
                   "ARCHIVER_KAFKA_SECURITY_PROTOCOL": "SSL", "ARCHIVER_KAFKA_SSL_CA_LOCATION": str(tls / "ca.pem"),
                   "ARCHIVER_KAFKA_CLIENT_SSL_CERTIFICATE_LOCATION": str(tls / "client.cert.pem"),
                   "ARCHIVER_KAFKA_CLIENT_SSL_KEY_LOCATION": str(tls / "client.key")}
    return "".join(f"export {k}={v}\n" for k, v in values.items())


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("up", "down", "status", "env") or argv[0] in ("-h", "--help"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, names = argv[0], argv[1:]
    secure = None
    if command == "env" and names[:1] == ["--secure"]:
        secure, names = (names[1] if len(names) > 1 else ""), []
    unknown = [n for n in names if n not in SERVICES]
    try:
        if unknown:
            raise ServiceError(f"unknown service {unknown[0]!r}; choose from {', '.join(SERVICES)}")
        s = Settings.from_env()
        # registry-tls belongs to the default set only where nginx is found (infra/tools fetches it)
        names = names or [n for n in SERVICES if n != "registry-tls" or _nginx(s)
                          or Process(s, n).pid() is not None]
        if command == "up":
            up(s, names)
        elif command == "down":
            down(s, names)
        elif command == "status":
            return status(s, names)
        else:
            sys.stdout.write(env_exports(s, secure))
    except ServiceError as e:
        print(f"infra/services {command}: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
