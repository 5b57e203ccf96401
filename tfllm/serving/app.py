"""The HTTP API of `tfllm-serve`, as a Starlette (ASGI) app.

    GET  /healthz                          liveness: {"status": "ok"}
    GET  /v1/models/<name>                 TF Serving's model status
    GET  /v1/models/<name>/metadata        what is served (family, context, labels, batching)
    POST /v1/models/<name>:predict         TF Serving's predict: {"instances": [...]} or
                                           {"inputs": [...]}; LMs and classifiers
    POST /v1/models/<name>:generate        one prompt; "stream": true answers with
                                           server-sent events, a token chunk at a time

Starlette because it is the small, well-kept ASGI core under FastAPI: async
request handling (so a streaming response and a slow client cost a coroutine,
not a thread), disconnect detection, and `sse-starlette` for standards-
compliant server-sent events with keep-alive pings; validation is ours
(`tfllm.serving.protocol`), so FastAPI's schema layer would add nothing.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
from sse_starlette.sse import EventSourceResponse
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from tfllm.serving.batcher import Batcher, Job
from tfllm.serving.continuous import Generation
from tfllm.serving.protocol import (
    ClientError,
    generation_settings,
    instance_prompt,
    parse_json,
    predict_response,
    predict_rows,
    prompt_text,
)


class Service:
    """What the routes share: the engine, its batcher and the served name."""

    def __init__(self, name: str, engine: Any, batcher: Batcher, default_max_new: int) -> None:
        self.name = name
        self.engine = engine
        self.batcher = batcher
        self.default_max_new = default_max_new

    def check_name(self, name: str) -> None:
        if name != self.name:
            raise ClientError(f"no model named {name!r} (this server serves {self.name!r})", 404)

    async def generation(self, prompt: str, fields: dict, where: str, stream: bool) -> Generation:
        """A checked generation request: settings valid, prompt + budget within the context.

        Without `max_new_tokens`, the server's default is a cap: the request
        gets as many as fit after its prompt (at most the default).
        """
        engine = self.engine
        ids = await anyio.to_thread.run_sync(engine.prompt_ids, prompt)
        if len(ids) >= engine.max_length:
            raise ClientError(
                f"{where}prompt: {len(ids)} tokens fill the model's context of "
                f"{engine.max_length} tokens (no room for a new one)"
            )
        if "max_new_tokens" not in fields:
            fields = {
                **fields,
                "max_new_tokens": min(self.default_max_new, engine.max_length - len(ids)),
            }
        settings = generation_settings(
            fields, self.default_max_new, engine.max_length, where, allowed=("stream",)
        )
        if len(ids) + settings.max_new_tokens > engine.max_length:
            raise ClientError(
                f"{where}prompt: {len(ids)} tokens + max_new_tokens {settings.max_new_tokens} "
                f"exceed the model's context of {engine.max_length} tokens"
            )
        return Generation(prompt, ids, settings, stream)

    async def run(self, job: Job) -> dict:
        """The job's final event (a non-streaming request waits for it)."""
        self.batcher.submit(job)
        try:
            while True:
                event = await job.next_event()
                if "error" in event:
                    raise ClientError(event["error"], event.get("status", 500))
                if event.get("done"):
                    return event
        finally:
            job.cancelled.set()  # a client that left frees its row (no-op once done)


def _error(message: str, status: int) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def build_app(service: Service) -> Starlette:
    engine = service.engine

    async def health(request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": service.name})

    async def status(request: Request) -> Response:
        service.check_name(request.path_params["name"])
        return JSONResponse(
            {
                "model_version_status": [
                    {
                        "version": "1",
                        "state": "AVAILABLE",
                        "status": {"error_code": "OK", "error_message": ""},
                    }
                ]
            }
        )

    async def metadata(request: Request) -> Response:
        service.check_name(request.path_params["name"])
        info = {
            "kind": engine.kind,
            "family": engine.config.model.name,
            "backend": engine.backend,
            "max_length": engine.max_length,
            "source": engine.checkpoint,
            "batching": {
                "max_batch": service.batcher.max_rows,
                "window_ms": service.batcher.window_s * 1000,
            },
            "methods": ["predict", "generate"] if engine.kind == "lm" else ["predict"],
            "served": {
                "batches": service.batcher.batches,
                "rows": service.batcher.rows_served,
                "cancelled": getattr(engine, "cancelled", 0),
                "joined_running_batch": getattr(engine, "joined", 0),
            },
        }
        if engine.kind == "lm":
            info["default_max_new_tokens"] = service.default_max_new
        else:
            info["labels"] = engine.labels
        return JSONResponse(
            {"model_spec": {"name": service.name, "version": "1"}, "metadata": info}
        )

    async def post(request: Request) -> Response:
        name, _, method = request.path_params["target"].rpartition(":")
        if not name:
            raise ClientError("POST /v1/models/<name>:predict or :generate", 404)
        service.check_name(name)
        body = parse_json(await request.body())
        if method == "predict":
            return await (predict_lm if engine.kind == "lm" else predict_classes)(body)
        if method == "generate" and engine.kind == "lm":
            return await generate(request, body)
        known = "predict, generate" if engine.kind == "lm" else "predict"
        raise ClientError(f"unknown method {method!r} for a {engine.kind} (known: {known})", 404)

    async def predict_lm(body: Any) -> Response:
        parsed = predict_rows(body)
        gens = []
        for i, row in enumerate(parsed.rows):
            prompt, fields = instance_prompt(row, i, ("prompt", "prompts"))
            gens.append(await service.generation(prompt, fields, f"instances[{i}].", False))
        async with anyio.create_task_group() as group:
            finals: list[dict] = [{}] * len(gens)

            async def one(i: int) -> None:
                finals[i] = await service.run(Job(gens[i]))

            for i in range(len(gens)):
                group.start_soon(one, i)
        return JSONResponse(predict_response([f["completion"] for f in finals], parsed.columnar))

    async def predict_classes(body: Any) -> Response:
        parsed = predict_rows(body)
        texts = []
        for i, row in enumerate(parsed.rows):
            text, extra = instance_prompt(row, i, ("text", "texts"))
            if extra:
                raise ClientError(f"instances[{i}].{sorted(extra)[0]}: unknown field")
            texts.append(text)
        final = await service.run(Job(texts, rows=len(texts)))
        return JSONResponse(predict_response(final["predictions"], parsed.columnar))

    async def generate(request: Request, body: Any) -> Response:
        if not isinstance(body, dict):
            raise ClientError('the body must be a JSON object with a "prompt"')
        if "prompt" not in body:
            raise ClientError("prompt: missing field")
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise ClientError("stream: must be true or false")
        fields = {k: v for k, v in body.items() if k != "prompt"}
        gen = await service.generation(prompt_text(body["prompt"], ""), fields, "", stream)
        job = Job(gen)
        if not stream:
            final = await service.run(job)
            return JSONResponse({k: v for k, v in final.items() if k != "done"})
        service.batcher.submit(job)
        return EventSourceResponse(_events(job), ping=15)

    async def on_client_error(request: Request, exc: Exception) -> Response:
        return _error(str(exc), exc.status)  # type: ignore[attr-defined]

    async def on_http_error(request: Request, exc: Exception) -> Response:
        return _error(str(exc.detail), exc.status_code)  # type: ignore[attr-defined]

    async def on_unexpected(request: Request, exc: Exception) -> Response:
        return _error(f"internal error: {type(exc).__name__}: {exc}", 500)

    routes = [
        Route("/healthz", health, methods=["GET"]),
        Route("/v1/models/{name}", status, methods=["GET"]),
        Route("/v1/models/{name}/metadata", metadata, methods=["GET"]),
        Route("/v1/models/{target}", post, methods=["POST"]),
    ]
    return Starlette(
        routes=routes,
        exception_handlers={
            ClientError: on_client_error,
            HTTPException: on_http_error,
            Exception: on_unexpected,
        },
    )


async def _events(job: Job) -> AsyncIterator[dict]:
    """The job's events as SSE messages: "token" chunks, then "done" (or "error").

    When the client disconnects, sse-starlette cancels this generator; the
    `finally` marks the job cancelled, and the engine stops decoding its row.
    """
    try:
        while True:
            event = await job.next_event()
            if "error" in event:
                yield {"event": "error", "data": json.dumps({"error": event["error"]})}
                return
            if event.get("done"):
                final = {k: v for k, v in event.items() if k != "done"}
                yield {"event": "done", "data": json.dumps(final)}
                return
            yield {"event": "token", "data": json.dumps(event)}
    finally:
        job.cancelled.set()
