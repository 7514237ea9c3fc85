"""Building and running the agent service: servicers, health, reflection, TLS, graceful drain."""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
from dataclasses import dataclass, field

import grpc
from flyteidl.service import agent_pb2 as service_pb2
from flyteidl.service import agent_pb2_grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from .._registry import AgentRegistry
from .._runner import AgentRunner
from ._connector import add_connector_services
from ._metrics import ServiceMetrics
from ._service import AgentMetadataServicer, AgentService, AsyncAgentServicer, SyncAgentServicer

__all__ = [
    "PROTOCOLS",
    "SERVICE_NAMES",
    "AgentServerHandle",
    "ServeConfig",
    "build_server",
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
    protocols: tuple[str, ...] = PROTOCOLS,
) -> AgentServerHandle:
    """A grpc.aio server with the agent services of each protocol, health and reflection added.

    Args:
        registry: the agents to serve.
        runner: calls agent methods; a new AgentRunner (default pool size) when None.
        metrics: where calls are counted; new ServiceMetrics when None.
        options: extra grpc server options.
        protocols: which of ``PROTOCOLS`` to answer: "v1" (FlytePropeller's three agent services),
            "v2" (Flyte 2's two connector services), or both.
    """
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown or not protocols:
        raise ValueError(f"protocols must be some of {', '.join(PROTOCOLS)}, got {', '.join(protocols) or 'none'}")
    runner = runner or AgentRunner()
    service = AgentService(registry, runner, metrics)
    server = grpc.aio.server(options=options or [])
    names: tuple[str, ...] = ()
    if "v1" in protocols:
        AsyncAgentServicer(service).add_to_server(server)
        SyncAgentServicer(service).add_to_server(server)
        agent_pb2_grpc.add_AgentMetadataServiceServicer_to_server(AgentMetadataServicer(service), server)
        names += SERVICE_NAMES
    if "v2" in protocols:
        names += add_connector_services(server, service)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection((*names, health.SERVICE_NAME, reflection.SERVICE_NAME), server)
    return AgentServerHandle(server=server, service=service, health=health_servicer, service_names=names)


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
    protocols: tuple[str, ...] = PROTOCOLS


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
    handle = build_server(registry, runner=runner, metrics=metrics, protocols=config.protocols)
    address = f"{config.host}:{config.port}"
    if config.tls_cert is not None and config.tls_key is not None:
        port = handle.server.add_secure_port(
            address, server_credentials(config.tls_cert, config.tls_key, config.tls_client_ca)
        )
    else:
        port = handle.server.add_insecure_port(address)
    metrics_server = None
    if config.metrics_port is not None:
        metrics_server, _ = start_http_server(config.metrics_port, addr=config.host, registry=metrics.registry)
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
