"""Building and running the agent service: servicers, health, reflection, TLS, graceful drain."""

from __future__ import annotations

import asyncio
import errno
import gc
import logging
import os
import signal
import socket
import sys
from dataclasses import dataclass, field

import grpc
from flyteidl.service import agent_pb2 as service_pb2
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from .._pool import close_clients
from .._registry import AgentRegistry
from .._runner import AgentRunner
from ._connector import add_connector_services
from ._handlers import add_guarded_servicer
from ._metrics import ServiceMetrics
from ._outputs import settle_type_engine
from ._service import AgentMetadataServicer, AgentService, AsyncAgentServicer, SyncAgentServicer

__all__ = [
    "PROTOCOLS",
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
#: The protocols a server can answer: "v1", FlytePropeller's agent services (flyteidl), and "v2",
#: Flyte 2's connector services (flyteidl2).
PROTOCOLS: tuple[str, ...] = ("v1", "v2")


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
    reflection_enabled: bool = True,
    protocols: tuple[str, ...] = PROTOCOLS,
) -> AgentServerHandle:
    """A grpc.aio server with the agent services of each protocol, health and (unless disabled) reflection added.

    Args:
        registry: the agents to serve.
        runner: calls agent methods; a new AgentRunner (default pool size) when None.
        metrics: where calls are counted; new ServiceMetrics when None.
        options: extra grpc server options.
        reflection_enabled: serve gRPC server reflection (what grpcurl uses to list and call methods).
        protocols: which of ``PROTOCOLS`` to answer: "v1" (FlytePropeller's three agent services),
            "v2" (Flyte 2's two connector services), or both.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown or not protocols:
        raise ValueError(f"protocols must be some of {', '.join(PROTOCOLS)}, got {', '.join(protocols) or 'none'}")
    runner = runner or AgentRunner()
    settle_type_engine()
    service = AgentService(registry, runner, metrics)
    server = grpc.aio.server(options=options or [])
    names: tuple[str, ...] = ()
    if "v1" in protocols:
        AsyncAgentServicer(service).add_to_server(server)
        SyncAgentServicer(service).add_to_server(server)
        metadata = service_pb2.DESCRIPTOR.services_by_name["AgentMetadataService"]
        add_guarded_servicer(server, AgentMetadataServicer(service), metadata)
        names += SERVICE_NAMES
    if "v2" in protocols:
        names += add_connector_services(server, service)
    health_servicer = health.aio.HealthServicer()
    add_guarded_servicer(server, health_servicer, health_pb2.DESCRIPTOR.services_by_name["Health"])
    if reflection_enabled:
        served = (*names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflected = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
        add_guarded_servicer(server, reflection.aio.ReflectionServicer(served), reflected)
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
    ports = [
        ("gRPC", "--port", config.host, config.port),
        ("metrics", "--metrics-port", config.metrics_host or config.host, config.metrics_port or 0),
    ]
    for what, flag, host, port in ports:
        if not port:
            continue
        try:
            with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the servers do: TIME_WAIT is fine
                probe.bind((host.strip("[]"), port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES, errno.EADDRNOTAVAIL):
                raise _port_error(what, flag, host, port, exc) from None


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
    #: the metrics server's own address (plain HTTP even under TLS); None: the same as ``host``
    metrics_host: str | None = None
    reflection: bool = True
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    tls_client_ca: bytes | None = None
    sync_workers: int | None = None
    grace_period: float = 25.0
    #: bind the port with SO_REUSEPORT, shared with the other workers of ``serve --workers N``
    reuse_port: bool = False
    protocols: tuple[str, ...] = PROTOCOLS


async def close_agents(registry: AgentRegistry, timeout: float = 5.0) -> None:
    """Await each loaded agent's optional ``async aclose()``, then close the clients pooled on this loop.

    The pools (``flyteagents.plugin.ClientPool``) would close them when the loop ends anyway;
    closing them here, as the service stops, bounds how long that takes.
    """
    for agent in list(registry.agents.values()):
        close = getattr(agent, "aclose", None)
        if close is None or not asyncio.iscoroutinefunction(close):
            continue
        try:
            await asyncio.wait_for(close(), timeout)
        except Exception as exc:  # one agent failing to close must not keep the others open
            logger.warning("agent %r did not close cleanly: %s: %s", agent.name, type(exc).__name__, exc)
    try:
        await asyncio.wait_for(close_clients(), timeout)
    except Exception as exc:  # closing is best effort: the service is stopping either way
        logger.warning("pooled clients did not close cleanly: %s: %s", type(exc).__name__, exc)


async def serve(registry: AgentRegistry, config: ServeConfig) -> int:
    """Run the service until SIGTERM or SIGINT, then drain and return 0.

    On the first signal health turns NOT_SERVING and stays so for ``grace_period`` seconds
    while every call, in flight or new, is still answered: a load balancer learns to stop
    routing here before the port closes. Then the port closes and calls still running are
    cancelled. A second signal ends the drain at once. Plain-function agent calls still
    running on their threads then are abandoned: the process exits without waiting for them.
    """
    from prometheus_client import start_http_server

    runner = AgentRunner(config.sync_workers)
    metrics = ServiceMetrics(runner)
    # SO_REUSEPORT only for the workers of one pool: otherwise a second service on a busy port would
    # start silently and take half its calls, where it should fail.
    options = [("grpc.so_reuseport", 1 if config.reuse_port else 0)]
    handle = build_server(
        registry,
        runner=runner,
        metrics=metrics,
        options=options,
        reflection_enabled=config.reflection,
        protocols=config.protocols,
    )
    metrics_server = None
    metrics_host = config.metrics_host or config.host
    try:
        port = _add_port(handle.server, config)
        if config.metrics_port is not None:
            try:
                metrics_server, _ = start_http_server(config.metrics_port, addr=metrics_host, registry=metrics.registry)
            except OSError as exc:
                raise _port_error("metrics", "--metrics-port", metrics_host, config.metrics_port, exc) from None
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
        "serving on %s:%s (%s, protocols %s), %d sync workers, %s event loop",
        config.host,
        port,
        tls,
        ",".join(config.protocols),
        runner.max_workers,
        type(loop).__module__.partition(".")[0],
    )

    signals = asyncio.Queue[int]()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, signals.put_nowait, sig)
    try:
        await signals.get()
        logger.info(
            "draining: health is NOT_SERVING and calls are still answered for %.1fs (a second signal stops now)",
            config.grace_period,
        )
        await handle.set_serving(False)
        try:
            await asyncio.wait_for(signals.get(), config.grace_period)
            logger.info("second signal: stopping now")
        except asyncio.TimeoutError:
            pass
        in_flight = sum(counter[0] for counter in handle.service.in_flight.values())
        if in_flight:
            logger.warning("cancelling %d calls still in flight", in_flight)
        await handle.server.stop(0)
        await close_agents(registry)
        logger.info("stopped")
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        runner.shutdown(wait=False)
        if metrics_server is not None:
            metrics_server.shutdown()
    if runner.busy_workers:
        # Python would wait at exit for the threads of these calls, however long they take.
        logger.warning("exiting without %d plain-function agent calls still running", runner.busy_workers)
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
    return 0
