"""Building and running the agent service: servicers, health, reflection, TLS, graceful drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
from dataclasses import dataclass, field

import grpc
from flyteidl.service import agent_pb2 as service_pb2
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from .._registry import AgentRegistry
from .._runner import AgentRunner
from ._handlers import add_guarded_servicer
from ._metrics import ServiceMetrics
from ._service import AgentMetadataServicer, AgentService, AsyncAgentServicer, SyncAgentServicer

__all__ = ["SERVICE_NAMES", "AgentServerHandle", "ServeConfig", "build_server", "serve", "server_credentials"]

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
    reflection_enabled: bool = True,
) -> AgentServerHandle:
    """A grpc.aio server with the three agent services, health and (unless disabled) reflection added.

    Args:
        registry: the agents to serve.
        runner: calls agent methods; a new AgentRunner (default pool size) when None.
        metrics: where calls are counted; new ServiceMetrics when None.
        options: extra grpc server options.
        reflection_enabled: serve gRPC server reflection (what grpcurl uses to list and call methods).
    """
    runner = runner or AgentRunner()
    service = AgentService(registry, runner, metrics)
    server = grpc.aio.server(options=options or [])
    AsyncAgentServicer(service).add_to_server(server)
    SyncAgentServicer(service).add_to_server(server)
    metadata = service_pb2.DESCRIPTOR.services_by_name["AgentMetadataService"]
    add_guarded_servicer(server, AgentMetadataServicer(service), metadata)
    health_servicer = health.aio.HealthServicer()
    add_guarded_servicer(server, health_servicer, health_pb2.DESCRIPTOR.services_by_name["Health"])
    names = SERVICE_NAMES
    if reflection_enabled:
        served = (*names, health.SERVICE_NAME, reflection.SERVICE_NAME)
        reflected = reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"]
        add_guarded_servicer(server, reflection.aio.ReflectionServicer(served), reflected)
    return AgentServerHandle(server=server, service=service, health=health_servicer, service_names=names)


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
    handle = build_server(registry, runner=runner, metrics=metrics, reflection_enabled=config.reflection)
    address = f"{config.host}:{config.port}"
    if config.tls_cert is not None and config.tls_key is not None:
        port = handle.server.add_secure_port(
            address, server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        )
    else:
        port = handle.server.add_insecure_port(address)
    metrics_server = None
    if config.metrics_port is not None:
        metrics_host = config.metrics_host or config.host
        metrics_server, _ = start_http_server(config.metrics_port, addr=metrics_host, registry=metrics.registry)
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
