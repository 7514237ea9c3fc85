"""``flyteagents serve --workers 2`` against one worker: GetTask throughput and CPU per request.

    .venv/bin/python benchmarks/workers.py [--seconds S] [--rounds R] [--callers C]

Starts ``flyteagents serve --workers 1`` and ``flyteagents serve --workers 2`` (each serving
benchmarks/service_agents.py's do-nothing async agent) and, round by round, alternately drives
each with C callers (default 64) making GetTask calls for S seconds over 8 connections: the
kernel spreads connections, not calls, over the workers of a SO_REUSEPORT port, so one would
reach one worker only. The load comes from h2load (Debian's nghttp2-client: HTTP/2 in C, sending
the gRPC-framed request) where it is installed, as the cheapest generator sharing the machine's
cores with the servers; else from two Python grpc.aio processes with 4 channels each.

It prints requests/s, the servers' CPU per request (all their processes: supervisor and
workers, from /proc/<pid>/task/*/schedstat) and each worker's share of the server CPU.

Floors (on a 2-core machine): each of the two workers takes at least 30% of the server CPU;
two workers answer at least 1.25x the GetTask throughput of one, with CPU per request within 1.1x.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import finish, serve_command

HERE = Path(__file__).resolve().parent
SERVING = re.compile(r"serving on [\d.]+:(\d+)")


def _cpu(pid: int) -> float:
    """CPU seconds of every thread of a process, from schedstat (nanoseconds)."""
    try:
        return sum(int((t / "schedstat").read_text().split()[0]) for t in Path(f"/proc/{pid}/task").iterdir()) / 1e9
    except (FileNotFoundError, ProcessLookupError):
        return 0.0


def _children(pid: int) -> list[int]:
    text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    return [int(p) for p in text.split()]


class _Server:
    def __init__(self, workers: int) -> None:
        env = dict(os.environ, BENCH_FRAMEWORK="flyteagents", PYTHONUNBUFFERED="1")
        cmd = serve_command("--port", "0", "--workers", str(workers))
        cmd += ["--metrics-port", "-1", "--modules", "service_agents", "--log-level", "WARNING"]
        self.workers = workers
        self.proc = subprocess.Popen(
            cmd, cwd=HERE, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, start_new_session=True
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            match = SERVING.search(line)
            if match:
                self.port = int(match[1])
                break
        else:
            raise RuntimeError(f"serve --workers {workers} exited with {self.proc.wait()}")
        self.pids = [self.proc.pid, *(_children(self.proc.pid) if workers > 1 else [])]

    def cpu(self) -> list[float]:
        return [_cpu(pid) for pid in self.pids]

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(60)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def _load(port: int, seconds: float, callers: int, channels: int) -> int:
    """Run in a load-generator process: GetTask calls for ``seconds``; returns how many were answered."""
    import grpc
    from flyteidl.service import agent_pb2_grpc
    from service import GET

    async def run() -> int:
        # A local subchannel pool per channel: without it the channels would share one connection.
        chans = [
            grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
            for _ in range(channels)
        ]
        stubs = [agent_pb2_grpc.AsyncAgentServiceStub(c) for c in chans]
        for stub in stubs:
            await stub.GetTask(GET, wait_for_ready=True, timeout=30)
        done = 0
        end = time.monotonic() + seconds

        async def caller(i: int) -> None:
            nonlocal done
            stub = stubs[i % len(stubs)]
            while time.monotonic() < end:
                await stub.GetTask(GET, timeout=30)
                done += 1

        await asyncio.gather(*(caller(i) for i in range(callers)))
        for c in chans:
            await c.close()
        return done

    return asyncio.run(run())


def _h2load(port: int, seconds: float, callers: int, body: Path) -> int:
    """GetTask calls h2load got answered in ``seconds``: 8 connections, ``callers`` streams in flight in all."""
    h2load = shutil.which("h2load")
    assert h2load is not None
    url = f"http://127.0.0.1:{port}/flyteidl.service.AsyncAgentService/GetTask"
    cmd = [h2load, "-D", str(round(seconds)), "-c", "8", "-m", str(max(1, callers // 8)), "-d", str(body)]
    cmd += ["-H", "content-type: application/grpc", "-H", "te: trailers", url]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    match = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded", out)
    assert match, out
    return int(match[1])


def _round(server: _Server, seconds: float, callers: int, body: Path | None) -> tuple[float, float, list[float]]:
    """(requests/s, server CPU us per request, each process's CPU seconds) of one round."""
    generators = 2
    cpu0 = server.cpu()
    if body is not None:
        total = _h2load(server.port, seconds, callers, body)
        used = [b - a for a, b in zip(cpu0, server.cpu(), strict=True)]
        return total / seconds, sum(used) / total * 1e6, used
    procs = [
        subprocess.Popen(
            [
                *(sys.executable, __file__, "--load", str(server.port)),
                *("--seconds", str(seconds), "--callers", str(callers // generators)),
            ],
            cwd=HERE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        for _ in range(generators)
    ]
    counts = [int(p.communicate()[0].split()[-1]) for p in procs]
    used = [b - a for a, b in zip(cpu0, server.cpu(), strict=True)]
    total = sum(counts)
    # Over the calling time, not the generators' start-up (imports), which the server does not see.
    return total / seconds, sum(used) / total * 1e6, used


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="calling time per round")
    parser.add_argument("--rounds", type=int, default=6, help="rounds per server, alternating")
    parser.add_argument("--callers", type=int, default=64, help="GetTask calls in flight in all")
    parser.add_argument("--load", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(HERE))
    if args.load:
        print(_load(args.load, args.seconds, args.callers, channels=4))
        return
    body = None
    if shutil.which("h2load"):
        from service import GET

        message = GET.SerializeToString()
        body = Path(tempfile.mkdtemp()) / "get.bin"
        body.write_bytes(b"\x00" + len(message).to_bytes(4, "big") + message)  # gRPC framing: uncompressed, length
    one, two = _Server(1), _Server(2)
    try:
        results: dict[int, list[tuple[float, float, list[float]]]] = {1: [], 2: []}
        for _ in range(args.rounds):
            for server in (one, two):
                results[server.workers].append(_round(server, args.seconds, args.callers, body))
    finally:
        one.stop()
        two.stop()
    load = "h2load, 8 connections" if body is not None else "2 Python load processes x 4 channels"
    print(f"\n{args.callers} callers ({load}), {args.rounds} rounds of {args.seconds:g}s each\n")
    print(f"{'server':<12} {'req/s':>8} {'CPU us/req':>11}  CPU share of each process (supervisor, workers)")
    rps = {w: statistics.median(r[0] for r in results[w]) for w in (1, 2)}
    cpu = {w: statistics.median(r[1] for r in results[w]) for w in (1, 2)}
    shares = []
    for workers in (1, 2):
        totals = [sum(col) for col in zip(*(r[2] for r in results[workers]), strict=True)]
        share = [t / sum(totals) for t in totals]
        if workers == 2:
            shares = share[1:]
        print(
            f"--workers {workers:<2} {rps[workers]:>8.0f} {cpu[workers]:>11.0f}  {' '.join(f'{s:.0%}' for s in share)}"
        )
    throughput, cost = rps[2] / rps[1], cpu[2] / cpu[1]
    floors = {
        "each worker >= 30% of the server CPU": all(s >= 0.30 for s in shares),
        "throughput >= 1.25x one worker's": throughput >= 1.25,
        "CPU per request within 1.1x": cost <= 1.1,
    }
    print(f"\nthroughput 2/1 = {throughput:.2f}x, CPU per request 2/1 = {cost:.2f}x")
    for name, held in floors.items():
        print(f"  {name}: {'ok' if held else 'MISSED'}")
    finish(all(floors.values()))


if __name__ == "__main__":
    main()
