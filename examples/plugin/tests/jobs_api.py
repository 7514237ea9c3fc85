"""A small jobs API server speaking the protocol ExampleJobAgent calls, on a free loopback port."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aiohttp import web

TOKEN = "s3cret-token"


class JobsAPI:
    """Jobs advance PENDING -> RUNNING -> DONE one GET at a time; ``fail`` fails; ``faults`` answers 503s first."""

    def __init__(self, token: str = TOKEN) -> None:
        self.token = token
        self.jobs: dict[str, dict[str, Any]] = {}
        self.by_key: dict[str, str] = {}
        self.faults = 0
        self.authorizations: list[str] = []
        self.url = ""
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> JobsAPI:
        self._thread.start()
        self._runner = asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    async def _start(self) -> web.AppRunner:
        app = web.Application(middlewares=[self._auth])
        app.router.add_post("/jobs", self._submit)
        app.router.add_get("/jobs/{id}", self._get)
        app.router.add_post("/jobs/{id}/cancel", self._cancel)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return runner

    @web.middleware
    async def _auth(self, request: web.Request, handler: Any) -> web.StreamResponse:
        self.authorizations.append(request.headers.get("Authorization", ""))
        if self.faults > 0:
            self.faults -= 1
            return web.json_response({"error": "busy"}, status=503)
        if request.headers.get("Authorization") != f"Bearer {self.token}":
            return web.json_response({"error": "unauthorized"}, status=401)
        return await handler(request)

    async def _submit(self, request: web.Request) -> web.Response:
        body = await request.json()
        key = body.get("idempotency_key")
        if key and key in self.by_key:
            return web.json_response({"id": self.by_key[key]})
        job_id = str(len(self.jobs) + 1)
        self.jobs[job_id] = {"command": body["command"], "state": "PENDING", "gets": 0}
        if key:
            self.by_key[key] = job_id
        return web.json_response({"id": job_id})

    async def _get(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "no such job"}, status=404)
        job["gets"] += 1
        if job["state"] not in ("DONE", "FAILED", "CANCELLED"):
            if job["command"] == "fail" and job["gets"] >= 2:
                job.update(state="FAILED", error="command exited 1")
            elif job["gets"] >= 2:
                job.update(state="DONE", result=len(job["command"]))
            else:
                job["state"] = "RUNNING"
        return web.json_response({k: v for k, v in job.items() if k in ("state", "result", "error")})

    async def _cancel(self, request: web.Request) -> web.Response:
        job = self.jobs.get(request.match_info["id"])
        if job is None:
            return web.json_response({"error": "no such job"}, status=404)
        job["state"] = "CANCELLED"
        return web.json_response({})
