"""Building and running the agent service: servicers, health, reflection, TLS, graceful drain."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import signal
import socket
from dataclasses import dataclass, field

import grpc
from flyteidl.service import agent_pb2 as service_pb2
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .._registry import AgentRegistry
from .._runner import AgentRunner
from ._metrics import ServiceMetrics
from ._service import AgentMetadataServicer, AgentService, AsyncAgentServicer, SyncAgentServicer

__all__ = [
    "SERVICE_NAMES",
    "AgentServerHandle",
    "PortUnavailableError",
    "ServeConfig",
    "build_server",
    "check_ports",
    "serve",
    "server_credentials",
]

logger = logging.getLogger("flyteagents.server")

#: The gRPC services the agent service answers (health reports SERVING for each of them).
SERVICE_NAMES: tuple[str, ...] = tuple(s.full_name for s in service_pb2.DESCRIPTOR.services_by_name.values())


@dataclass
class AgentServerHandle:
    """A built, not yet started, grpc.aio server and the objects behind it."""

    server: grpc.aio.Server
    service: AgentService
    health: health.aio.HealthServicer
    service_names: tuple[str, ...] = field(default_factory=tuple)

    async def set_serving(self, serving: bool) -> None:
        """Report SERVING (or NOT_SERVING) for the whole server and each service."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)


def server_credentials(cert: bytes, key: bytes, client_ca: bytes | None = None) -> grpc.ServerCredentials:
    """TLS credentials; with ``client_ca``, clients must present a certificate it signed (mTLS)."""
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def build_server(
    registry: AgentRegistry,
    *,
    runner: AgentRunner | None = None,
    metrics: ServiceMetrics | None = None,
    options: list[tuple[str, int]] | None = None,
) -> AgentServerHandle:
    """A grpc.aio server with the three agent services, health and reflection added.

    Args:
        registry: the agents to serve.
        runner: calls agent methods; a new AgentRunner (default pool size) when None.
        metrics: where calls are counted; new ServiceMetrics when None.
        options: extra grpc server options.
    """
    runner = runner or AgentRunner()
    service = AgentService(registry, runner, metrics)
    server = grpc.aio.server(options=options or [])
    AsyncAgentServicer(service).add_to_server(server)
    SyncAgentServicer(service).add_to_server(server)
    agent_pb2_grpc.add_AgentMetadataServiceServicer_to_server(AgentMetadataServicer(service), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = SERVICE_NAMES
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return AgentServerHandle(server=server, service=service, health=health_servicer, service_names=names)


class PortUnavailableError(OSError):
    """A port the service was told to listen on cannot be bound (in use, or not allowed)."""


def _port_error(what: str, flag: str, host: str, port: int, exc: OSError) -> PortUnavailableError:
    return PortUnavailableError(f"cannot listen on {what} port {port} on {host} ({flag}): {exc.strerror or exc}")


def check_ports(config: ServeConfig) -> None:
    """Raise PortUnavailableError, naming the port and its flag, if the gRPC or metrics port cannot be bound.

    ``serve`` binds them again (and raises the same error); checking first lets ``flyteagents serve``
    fail before it imports any plugin, and gives the system's reason where gRPC says only "Failed to bind".
    """
    ports = [("gRPC", "--port", config.port), ("metrics", "--metrics-port", config.metrics_port or 0)]
    family = socket.AF_INET6 if ":" in config.host else socket.AF_INET
    for what, flag, port in ports:
        if not port:
            continue
        try:
            with socket.socket(family) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
                probe.bind((config.host.strip("[]"), port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                raise _port_error(what, flag, config.host, port, exc) from None


def _add_port(server: grpc.aio.Server, config: ServeConfig) -> int:
    address = f"{config.host}:{config.port}"
    try:
        if config.tls_cert is not None and config.tls_key is not None:
            credentials = server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
            return server.add_secure_port(address, credentials)
        return server.add_insecure_port(address)
    except RuntimeError:  # gRPC says only "Failed to bind"
        check_ports(config)
        raise PortUnavailableError(f"cannot listen on gRPC port {config.port} on {config.host} (--port)") from None


@dataclass
class ServeConfig:
    """Settings of ``flyteagents serve``."""

    host: str = "0.0.0.0"
    port: int = 8000
    metrics_port: int | None = 9090
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    tls_client_ca: bytes | None = None
    sync_workers: int | None = None
    grace_period: float = 25.0


async def close_agents(registry: AgentRegistry, timeout: float = 5.0) -> None:
    """Await each loaded agent's optional ``async aclose()`` so it releases its clients and pools."""
    for agent in list(registry.agents.values()):
        close = getattr(agent, "aclose", None)
        if close is None or not asyncio.iscoroutinefunction(close):
            continue
        try:
            await asyncio.wait_for(close(), timeout)
        except Exception as exc:  # one agent failing to close must not keep the others open
            logger.warning("agent %r did not close cleanly: %s: %s", agent.name, type(exc).__name__, exc)


async def serve(registry: AgentRegistry, config: ServeConfig) -> int:
    """Run the service until SIGTERM or SIGINT, then drain in-flight calls and return 0.

    On a signal the server stops accepting calls, health turns NOT_SERVING, and calls
    in flight get ``grace_period`` seconds to finish before they are cancelled.
    """
    from prometheus_client import start_http_server

    runner = AgentRunner(config.sync_workers)
    metrics = ServiceMetrics(runner)
    # Without SO_REUSEPORT a second service on a busy port fails instead of silently sharing it.
    handle = build_server(registry, runner=runner, metrics=metrics, options=[("grpc.so_reuseport", 0)])
    metrics_server = None
    try:
        port = _add_port(handle.server, config)
        if config.metrics_port is not None:
            try:
                metrics_server, _ = start_http_server(config.metrics_port, addr=config.host, registry=metrics.registry)
            except OSError as exc:
                raise _port_error("metrics", "--metrics-port", config.host, config.metrics_port, exc) from None
    except PortUnavailableError:
        await handle.server.stop(None)  # a server left to the garbage collector fails at interpreter exit
        runner.shutdown(wait=False)
        raise
    await handle.set_serving(True)
    await handle.server.start()
    # Everything imported so far (flytekit, plugins, agents) lives as long as the process: keep it
    # out of the garbage collector's scans, which otherwise grow with every plugin installed.
    gc.collect()
    gc.freeze()
    tls = "mTLS" if config.tls_client_ca else "TLS" if config.tls_cert else "plaintext"
    metrics_note = f", metrics on port {metrics_server.server_port}" if metrics_server is not None else ""
    # Tests and operators read this line to learn the bound port (``--port 0`` picks a free one).
    print(f"flyteagents serving on {config.host}:{port} ({tls}){metrics_note}", flush=True)
    loop = asyncio.get_running_loop()
    logger.info(
        "serving on %s:%s (%s), %d sync workers, %s event loop",
        config.host,
        port,
        tls,
        runner.max_workers,
        type(loop).__module__.partition(".")[0],
    )

    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await stop.wait()
        logger.info("stopping: draining in-flight calls for up to %.1fs", config.grace_period)
        await handle.set_serving(False)
        await handle.server.stop(config.grace_period)
        await close_agents(registry)
        logger.info("stopped")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        runner.shutdown(wait=False)
        if metrics_server is not None:
            metrics_server.shutdown()
    return 0
