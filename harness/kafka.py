"""Apache Kafka 4.x in KRaft combined mode (broker + controller in one JVM) on loopback.

The broker jars come from Maven Central through `mvn dependency:copy-dependencies`
(see `harness/maven/pom.xml`) and are cached per version under the user's cache dir. Maven
checks each download against the repository's checksum (`--strict-checksums`), and the
harness checks the whole set against `harness/maven/jars.sha256`, so a new machine runs the
very jars the tests ran (`python -m harness pin-kafka` rewrites that list on purpose).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
import uuid
from pathlib import Path

from harness.errors import ServiceError
from harness.paths import REPO_ROOT, cache_dir
from harness.ports import LOOPBACK_HOST, free_ports, port_is_open
from harness.service import Service

KAFKA_VERSION = "4.1.1"
POM_PATH = REPO_ROOT / "harness" / "maven" / "pom.xml"
JAR_DIGESTS_PATH = REPO_ROOT / "harness" / "maven" / "jars.sha256"
MAVEN_TIMEOUT_S = 600.0
FORMAT_TIMEOUT_S = 90.0
PROBE_TIMEOUT_S = 5.0
PROBE_THREAD_NAME = "gpux-kafka-readiness"
AIOKAFKA_LOGGER_NAMES = ("aiokafka", "aiokafka.conn", "aiokafka.admin.client")
JVM_OPTIONS = (
    "-Xms256m",
    "-Xmx512m",
    "-XX:+UseG1GC",
    "-XX:MaxGCPauseMillis=20",
    "-Djava.awt.headless=true",
)

LOG4J2_PROPERTIES = """\
# Written by the gpux harness: everything to stdout, which the harness sends to the log file.
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRefs = console
rootLogger.appenderRef.console.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.controller.name = kafka.controller
logger.controller.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
"""


def libs_dir(version: str = KAFKA_VERSION) -> Path:
    return cache_dir() / f"kafka-{version}" / "libs"


def broker_jar(version: str = KAFKA_VERSION) -> Path:
    return libs_dir(version) / f"kafka_2.13-{version}.jar"


def _pom_stamp_path(version: str) -> Path:
    return libs_dir(version).parent / "pom.sha256"


def _pom_digest() -> str:
    """Digest of what decides the jars: the pom and the pinned jar digests."""
    return hashlib.sha256(POM_PATH.read_bytes() + JAR_DIGESTS_PATH.read_bytes()).hexdigest()


def jar_digests(directory: Path) -> dict[str, str]:
    """Return {file name: sha256 hex} of every jar in `directory`."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(directory.glob("*.jar"))
    }


def pinned_jar_digests() -> dict[str, str]:
    """Return the jar digests `jars.sha256` pins (lines of `SHA256  FILE`, as sha256sum)."""
    pinned: dict[str, str] = {}
    for line in JAR_DIGESTS_PATH.read_text(encoding="ascii").splitlines():
        if line.strip() and not line.startswith("#"):
            digest, name = line.split()
            pinned[name] = digest
    return pinned


def check_jars(directory: Path) -> None:
    """Raise ServiceError naming every jar that is missing, extra or not the pinned bytes."""
    found, pinned = jar_digests(directory), pinned_jar_digests()
    problems = [f"missing {name}" for name in sorted(pinned.keys() - found.keys())]
    problems += [f"not pinned {name}" for name in sorted(found.keys() - pinned.keys())]
    problems += [
        f"sha256 of {name} is {found[name]}, pinned {pinned[name]}"
        for name in sorted(found.keys() & pinned.keys())
        if found[name] != pinned[name]
    ]
    if problems:
        raise ServiceError(
            f"the Kafka jars Maven fetched differ from {JAR_DIGESTS_PATH.name}: "
            + "; ".join(problems)
        )


def write_pinned_jar_digests(version: str = KAFKA_VERSION) -> Path:
    """Fetch the jars afresh and pin their digests in `jars.sha256`; return that path."""
    with tempfile.TemporaryDirectory(prefix="kafka-pin-") as staging:
        _copy_dependencies(version, Path(staging))
        lines = [f"{digest}  {name}" for name, digest in jar_digests(Path(staging)).items()]
    header = f"# Kafka {version} and its runtime jars, as `python -m harness pin-kafka` got them"
    JAR_DIGESTS_PATH.write_text("\n".join([header, *lines]) + "\n", encoding="ascii")
    return JAR_DIGESTS_PATH


def kafka_installed(version: str = KAFKA_VERSION) -> bool:
    """Tell whether the cached jars exist and were resolved from the current pom."""
    try:
        stamp = _pom_stamp_path(version).read_text(encoding="ascii").strip()
    except OSError:
        return False
    return stamp == _pom_digest() and broker_jar(version).is_file()


def install_kafka(version: str = KAFKA_VERSION) -> Path:
    """Fetch the broker jars with Maven unless cached; return the libs dir."""
    target = libs_dir(version)
    if kafka_installed(version):
        return target
    if shutil.which("mvn") is None:
        raise ServiceError("Maven (mvn) is not on PATH; it fetches the Kafka broker jars")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix="libs-", dir=target.parent))
    try:
        _copy_dependencies(version, staging)
        check_jars(staging)
        shutil.rmtree(target, ignore_errors=True)  # resolved from an older pom
        _publish_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    if not broker_jar(version).is_file():
        raise ServiceError(f"Maven ran but {broker_jar(version)} is missing")
    _pom_stamp_path(version).write_text(_pom_digest() + "\n", encoding="ascii")
    return target


def _copy_dependencies(version: str, output_dir: Path) -> None:
    command = [
        "mvn", "-q", "-B", "--strict-checksums", "-f", str(POM_PATH),
        "dependency:copy-dependencies",
        f"-Dkafka.version={version}", "-DincludeScope=runtime",
        f"-DoutputDirectory={output_dir}",
    ]  # fmt: skip
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=MAVEN_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as error:
        raise ServiceError(f"Maven did not fetch Kafka {version} in {MAVEN_TIMEOUT_S}s") from error
    if result.returncode != 0:
        output = (result.stdout + result.stderr)[-4000:]
        raise ServiceError(f"Maven failed to fetch Kafka {version}:\n{output}")


def _publish_dir(staging: Path, target: Path) -> None:
    """Move a complete staging dir into place; a concurrent installer may have won."""
    try:
        staging.rename(target)
    except OSError:
        if not target.is_dir():
            raise


def random_cluster_id() -> str:
    """Return a Kafka cluster id: 16 random bytes, URL-safe base64 without padding."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode("ascii").rstrip("=")


def server_properties(data_dir: Path, broker_port: int, controller_port: int) -> str:
    """Return a single-node combined-mode config that supports transactions."""
    settings = {
        "process.roles": "broker,controller",
        "node.id": "1",
        "controller.quorum.voters": f"1@{LOOPBACK_HOST}:{controller_port}",
        "listeners": (
            f"PLAINTEXT://{LOOPBACK_HOST}:{broker_port},"
            f"CONTROLLER://{LOOPBACK_HOST}:{controller_port}"
        ),
        "advertised.listeners": f"PLAINTEXT://{LOOPBACK_HOST}:{broker_port}",
        "inter.broker.listener.name": "PLAINTEXT",
        "controller.listener.names": "CONTROLLER",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data_dir),
        "num.partitions": "1",
        "default.replication.factor": "1",
        "min.insync.replicas": "1",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "10",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "10",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        # After a SIGKILL the restarted broker cannot register until the old session
        # expires (DUPLICATE_BROKER_REGISTRATION), so keep that session short.
        "broker.session.timeout.ms": "4000",
        "broker.heartbeat.interval.ms": "500",
        "auto.create.topics.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "log.retention.hours": "168",
    }
    return "".join(f"{key}={value}\n" for key, value in settings.items())


class KafkaService(Service):
    """A one-node Kafka 4.x cluster (KRaft combined mode) on free loopback ports."""

    name = "kafka"
    start_timeout_s = 90.0

    def __init__(self, run_dir: Path, version: str = KAFKA_VERSION) -> None:
        super().__init__(run_dir)
        self.version = version
        self.broker_port = 0
        self.controller_port = 0

    @property
    def endpoint(self) -> str:
        return f"{LOOPBACK_HOST}:{self.broker_port}"

    @property
    def bootstrap_servers(self) -> str:
        return self.endpoint

    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def config_path(self) -> Path:
        return self.run_dir / "server.properties"

    @property
    def log4j_path(self) -> Path:
        return self.run_dir / "log4j2.properties"

    def _prepare(self) -> None:
        install_kafka(self.version)
        self.broker_port, self.controller_port = free_ports(2)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        config = server_properties(self.data_dir, self.broker_port, self.controller_port)
        self.config_path.write_text(config, encoding="utf-8")
        self.log4j_path.write_text(LOG4J2_PROPERTIES, encoding="utf-8")
        if not (self.data_dir / "meta.properties").is_file():
            self._format_storage()

    def _java(self, main_class: str, *arguments: str) -> list[str]:
        classpath = f"{libs_dir(self.version)}{os.sep}*"
        log4j = f"-Dlog4j2.configurationFile={self.log4j_path}"
        return ["java", *JVM_OPTIONS, log4j, "-cp", classpath, main_class, *arguments]

    def _format_storage(self) -> None:
        command = self._java(
            "kafka.tools.StorageTool", "format",
            # one argument: an id starting with "-" (1 in 64) would read as an option
            f"--cluster-id={random_cluster_id()}", "--config", str(self.config_path),
        )  # fmt: skip
        with self.log_path.open("ab") as log:
            try:
                result = subprocess.run(
                    command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    timeout=FORMAT_TIMEOUT_S, check=False,
                )  # fmt: skip
            except subprocess.TimeoutExpired as error:
                raise self._error(f"formatting Kafka storage took over {FORMAT_TIMEOUT_S}s") from (
                    error
                )
        if result.returncode != 0:
            raise self._error(f"formatting Kafka storage failed (code {result.returncode})")

    def _command(self) -> list[str]:
        return self._java("kafka.Kafka", str(self.config_path))

    def _probe_ready(self) -> bool:
        if not port_is_open(self.broker_port):
            return False
        return broker_answers_metadata(self.bootstrap_servers, PROBE_TIMEOUT_S)

    def _state_extra(self) -> dict[str, object]:
        return {
            "broker_port": self.broker_port,
            "controller_port": self.controller_port,
            "env": {"KAFKA_BOOTSTRAP": self.bootstrap_servers},
        }


def broker_answers_metadata(bootstrap_servers: str, timeout_s: float) -> bool:
    """Tell whether the cluster answers a metadata request naming at least one broker.

    Runs aiokafka on a private event loop in a thread, so it works from sync code even
    when the calling thread already runs an event loop.
    """
    _install_probe_log_filter()
    outcome: list[bool] = []
    worker = threading.Thread(
        target=lambda: outcome.append(asyncio.run(_describe_cluster(bootstrap_servers, timeout_s))),
        name=PROBE_THREAD_NAME,
        daemon=True,
    )
    worker.start()
    worker.join(timeout_s + 2.0)
    return bool(outcome) and outcome[0]


async def _describe_cluster(bootstrap_servers: str, timeout_s: float) -> bool:
    from aiokafka.admin import AIOKafkaAdminClient  # type: ignore[import-untyped]

    timeout_ms = int(timeout_s * 1000)
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=timeout_ms,
        connections_max_idle_ms=timeout_ms + 1000,
    )
    try:
        await asyncio.wait_for(admin.start(), timeout_s)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout_s)
    except Exception:  # noqa: BLE001 -- any failure means "not ready yet"
        return False
    finally:
        await _close_quietly(admin)
    return bool(cluster.get("brokers"))


async def _close_quietly(admin: object) -> None:
    close = getattr(admin, "close", None)
    if close is None:
        return
    try:
        await close()
    except Exception:  # noqa: BLE001 -- closing a half-started client may fail; irrelevant
        return


class _ProbeLogFilter(logging.Filter):
    """Drop aiokafka's connection errors logged by readiness probes: failing is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.threadName != PROBE_THREAD_NAME


_PROBE_LOG_FILTER = _ProbeLogFilter()


def _install_probe_log_filter() -> None:
    for logger_name in AIOKAFKA_LOGGER_NAMES:
        logger = logging.getLogger(logger_name)
        if _PROBE_LOG_FILTER not in logger.filters:
            logger.addFilter(_PROBE_LOG_FILTER)
