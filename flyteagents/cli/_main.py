"""``flyteagents serve`` and ``flyteagents agents``."""

from __future__ import annotations

import asyncio
import importlib
import os
import shutil
import sys
import warnings
from collections.abc import Callable, Coroutine, Sequence
from pathlib import Path
from typing import Any

import click
from flyteidl.admin.agent_pb2 import Agent

__all__ = ["cli", "main"]

_ENV = "FLYTEAGENTS_"


def _read(path: str | None) -> bytes | None:
    return Path(path).read_bytes() if path else None


def _modules(values: Sequence[str]) -> list[str]:
    """``--modules a,b --modules c`` (or FLYTEAGENTS_MODULES="a,b c") -> [a, b, c]."""
    return [m for value in values for m in value.replace(",", " ").split() if m]


def print_agents(agents: Sequence[Agent], title: str) -> None:
    """Print agents as a table: name, task categories, sync or async."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("Agent", style="cyan", no_wrap=True)
    table.add_column("Task types (version)", style="cyan")
    table.add_column("Sync", style="green")
    for agent in agents:
        categories = ", ".join(f"{c.name} ({c.version})" for c in agent.supported_task_categories)
        table.add_row(agent.name, categories or ", ".join(agent.supported_task_types), str(agent.is_sync))
    Console(width=max(100, Console().width)).print(table)


def _loop_runner(name: str) -> Callable[[Coroutine[Any, Any, int]], int]:
    """What runs the service's main coroutine: ``uvloop.run`` or ``asyncio.run``."""
    if name != "asyncio":
        try:
            import uvloop
        except ImportError:
            if name == "uvloop":
                raise click.UsageError("--loop uvloop: uvloop is not installed") from None
        else:
            return uvloop.run
    return asyncio.run


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="flyteagents")
def cli() -> None:
    """Run Flyte tasks on agents."""


@cli.command()
@click.option("--host", default="0.0.0.0", show_default=True, envvar=f"{_ENV}HOST", help="Address to listen on.")
@click.option("--port", default=8000, show_default=True, envvar=f"{_ENV}PORT", help="gRPC port (0: any free port).")
@click.option(
    "--metrics-port",
    default=9090,
    show_default=True,
    envvar=f"{_ENV}METRICS_PORT",
    help="Prometheus metrics port (0: any free port, -1: no metrics server).",
)
@click.option(
    "--metrics-host",
    envvar=f"{_ENV}METRICS_HOST",
    help="Address the metrics server listens on (plain HTTP, even under TLS) [default: --host].",
)
@click.option(
    "--reflection/--no-reflection",
    default=True,
    show_default=True,
    envvar=f"{_ENV}REFLECTION",
    help="Serve gRPC server reflection (lets grpcurl list and call the services).",
)
@click.option(
    "--tls-cert",
    envvar=f"{_ENV}TLS_CERT",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM server certificate.",
)
@click.option(
    "--tls-key",
    envvar=f"{_ENV}TLS_KEY",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM server private key.",
)
@click.option(
    "--tls-client-ca",
    envvar=f"{_ENV}TLS_CLIENT_CA",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM CA that client certificates must be signed by (mutual TLS).",
)
@click.option(
    "--sync-workers",
    type=click.IntRange(min=1),
    envvar=f"{_ENV}SYNC_WORKERS",
    help="Threads running agent methods written as plain functions [default: 4 per core, 8-64].",
)
@click.option(
    "--workers",
    type=click.IntRange(min=1),
    envvar=f"{_ENV}WORKERS",
    help="Server processes sharing the port (SO_REUSEPORT, Linux), one metrics endpoint for all "
    "[default: the CPUs the process may use, cgroup CPU limit respected; 1 elsewhere than Linux].",
)
@click.option("--reuse-port", is_flag=True, hidden=True, help="Bind with SO_REUSEPORT (set for each worker).")
@click.option(
    "--grace-period",
    default=25.0,
    show_default=True,
    type=click.FloatRange(min=0),
    envvar=f"{_ENV}GRACE_PERIOD",
    help="Seconds of drain after SIGTERM: health says NOT_SERVING while calls are still answered.",
)
@click.option(
    "--modules",
    multiple=True,
    envvar=f"{_ENV}MODULES",
    help="Comma-separated modules to import that register agents (besides installed plugins).",
)
@click.option(
    "--loop",
    "event_loop",
    type=click.Choice(["auto", "uvloop", "asyncio"]),
    default="auto",
    show_default=True,
    envvar=f"{_ENV}LOOP",
    help="Event loop: uvloop (about a tenth less CPU per call), asyncio's own, or auto (uvloop where installed).",
)
@click.option(
    "--protocols",
    default="v1,v2",
    show_default=True,
    envvar=f"{_ENV}PROTOCOLS",
    help="Comma-separated protocols to answer: v1 (FlytePropeller's agent services), v2 (Flyte 2's connectors).",
)
@click.option("--log-level", default="INFO", show_default=True, envvar=f"{_ENV}LOG_LEVEL", help="Logging level.")
def serve(
    host: str,
    port: int,
    metrics_port: int,
    metrics_host: str | None,
    reflection: bool,
    tls_cert: str | None,
    tls_key: str | None,
    tls_client_ca: str | None,
    sync_workers: int | None,
    workers: int | None,
    reuse_port: bool,
    grace_period: float,
    modules: Sequence[str],
    event_loop: str,
    protocols: str,
    log_level: str,
) -> None:
    """Serve the installed agents over gRPC to FlytePropeller (v1) and Flyte 2's backend (v2)."""
    from flyteagents import AgentRegistry
    from flyteagents.server import PROTOCOLS, ServeConfig, configure_logging
    from flyteagents.server import serve as run_server
    from flyteagents.server._app import PortUnavailableError, check_ports

    chosen = tuple(dict.fromkeys(p.strip().lower() for p in protocols.split(",") if p.strip()))
    if not chosen or set(chosen) - set(PROTOCOLS):
        raise click.BadParameter(f"choose from {', '.join(PROTOCOLS)}, got {protocols!r}", param_hint="--protocols")
    if bool(tls_cert) != bool(tls_key):
        raise click.UsageError("--tls-cert and --tls-key go together")
    if tls_client_ca and not tls_cert:
        raise click.UsageError("--tls-client-ca needs --tls-cert and --tls-key")
    run = _loop_runner(event_loop)
    if not reuse_port:  # a pool's worker shares the port its supervisor already holds
        try:
            # before importing plugins: a busy port is one line, at once
            metrics = None if metrics_port < 0 else metrics_port
            check_ports(ServeConfig(host=host, port=port, metrics_port=metrics, metrics_host=metrics_host))
        except PortUnavailableError as exc:
            raise click.ClickException(str(exc)) from None
    configure_logging(log_level.upper())
    if workers is None:
        from flyteagents.server._workers import available_cpus

        # Only Linux spreads a SO_REUSEPORT port's connections over its listeners.
        workers = available_cpus() if sys.platform == "linux" else 1
    if workers > 1:
        if sys.platform != "linux":
            raise click.UsageError("--workers above 1 needs Linux (SO_REUSEPORT that spreads connections)")
        from flyteagents.server._workers import WorkerPool, supervise

        # Each worker is `flyteagents serve` as this one was started (the console script next to
        # this interpreter), so it finds --modules the same way.
        script = shutil.which("flyteagents", path=os.path.dirname(sys.executable))
        launcher = [script] if script else [sys.executable, "-c", "from flyteagents.cli import main; main()"]
        worker = [*launcher, "serve", "--workers", "1"]
        worker += ["--reuse-port", "--host", host, "--grace-period", str(grace_period), "--loop", event_loop]
        worker += ["--log-level", log_level, "--reflection" if reflection else "--no-reflection"]
        worker += ["--protocols", ",".join(chosen)]
        # Each worker serves its metrics on a free loopback port; the supervisor sums them on --metrics-port.
        worker += ["--metrics-port", "0" if metrics_port >= 0 else "-1", "--metrics-host", "127.0.0.1"]
        for flag, value in (("--tls-cert", tls_cert), ("--tls-key", tls_key), ("--tls-client-ca", tls_client_ca)):
            if value:
                worker += [flag, os.path.abspath(value)]
        if sync_workers is not None:
            worker += ["--sync-workers", str(sync_workers)]
        if modules:
            worker += ["--modules", ",".join(_modules(modules))]
        try:
            pool = WorkerPool(worker, workers, host, port, metrics=metrics_port >= 0, env=dict(os.environ))
        except OSError as exc:
            raise click.ClickException(f"cannot bind {host}:{port}: {exc.strerror or exc}") from None
        tls = "mTLS" if tls_client_ca else "TLS" if tls_cert else "plaintext"
        sys.exit(supervise(pool, metrics_host, None if metrics_port < 0 else metrics_port, tls))
    # Like `pyflyte serve`, let --modules name modules in the working directory; last on the path, so a
    # file there (an openai.py, say) never shadows a library a plugin imports.
    if os.getcwd() not in sys.path:
        sys.path.append(os.getcwd())
    registry = AgentRegistry.default()
    failures = registry.load_plugins()
    for module in _modules(modules):
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise click.ClickException(f"cannot import agent module {module!r}: {type(exc).__name__}: {exc}") from exc
    agents = registry.list_agents()
    print_agents(agents, "flyteagents: registered agents")
    for name, error in failures.items():
        click.secho(f"plugin {name!r} failed to load: {error}", fg="red", err=True)
    if not agents:
        click.secho("no agents registered: install a plugin or pass --modules", fg="yellow", err=True)
    config = ServeConfig(
        host=host,
        port=port,
        metrics_port=None if metrics_port < 0 else metrics_port,
        metrics_host=metrics_host,
        reflection=reflection,
        tls_cert=_read(tls_cert),
        tls_key=_read(tls_key),
        tls_client_ca=_read(tls_client_ca),
        sync_workers=sync_workers,
        grace_period=grace_period,
        reuse_port=reuse_port,
        protocols=chosen,
    )
    try:
        code = run(run_server(registry, config))
    except PortUnavailableError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(code)


@cli.command()
@click.option("--endpoint", required=True, envvar=f"{_ENV}ENDPOINT", help="HOST:PORT of a running agent service.")
@click.option(
    "--tls-ca",
    envvar=f"{_ENV}TLS_CA",
    type=click.Path(exists=True, dir_okay=False),
    help="PEM CA to trust (TLS).",
)
@click.option("--tls-cert", type=click.Path(exists=True, dir_okay=False), help="PEM client certificate (mutual TLS).")
@click.option("--tls-key", type=click.Path(exists=True, dir_okay=False), help="PEM client key (mutual TLS).")
@click.option("--timeout", default=10.0, show_default=True, help="Seconds to wait for the answer.")
@click.option(
    "--protocol",
    type=click.Choice(["v1", "v2"]),
    default="v1",
    show_default=True,
    help="Ask as FlytePropeller 1.x does (ListAgents) or as Flyte 2's backend does (ListConnectors).",
)
def agents(
    endpoint: str, tls_ca: str | None, tls_cert: str | None, tls_key: str | None, timeout: float, protocol: str
) -> None:
    """List the agents a running service serves (its ListAgents, or ListConnectors, answer)."""
    import grpc

    from flyteagents.client import AgentClient, channel_credentials

    credentials = channel_credentials(_read(tls_ca), _read(tls_cert), _read(tls_key)) if tls_ca else None

    async def list_agents() -> list[Agent]:
        async with AgentClient(endpoint, credentials=credentials, timeout=timeout) as client:
            if protocol == "v2":
                return await client.list_connectors()
            return await client.list_agents()

    try:
        found = asyncio.run(list_agents())
    except grpc.aio.AioRpcError as exc:
        raise click.ClickException(f"{endpoint}: {exc.code().name}: {exc.details()}") from None
    print_agents(found, f"agents served at {endpoint}")


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of the ``flyteagents`` console script."""
    # google-api-core warns on every import of a Google client (the BigQuery plugin's) that its support
    # for Python < 3.12 ends in 2027: a notice for developers, noise in an operator's service log.
    warnings.filterwarnings("ignore", "You are using a Python version", FutureWarning)
    cli.main(args=list(argv) if argv is not None else None, prog_name="flyteagents")
