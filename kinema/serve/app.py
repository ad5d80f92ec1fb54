"""The HTTP API and the web page: `create_app(data_dir, ...)` builds the FastAPI app.

    POST /v1/videos                 make a video (202 + the job; 429 + Retry-After when the queue is full)
    GET  /v1/videos?limit=20        recent jobs, newest first
    GET  /v1/videos/{id}            one job: status, progress 0-100, timings, error
    GET  /v1/videos/{id}/content    the finished file (409 until done)
    GET  /v1/videos/{id}/events     server-sent events with progress until done or failed
    GET  /v1/models                 the models this install can load
    GET  /healthz                   liveness and queue counts (never needs the token)
    GET  /                          the web page;  /docs, /openapi.json: the API's description

With a token, every route but /healthz, the page and /docs-assets (static files holding no
data) needs `Authorization: Bearer <token>`. GET routes also take the token from the
`kinema_token` cookie, which the page sets so that <video src> and EventSource (which
cannot send headers) work; POST never does, so another site cannot make videos through a
browser.
No route reads or writes a path a request names: files are found by job id alone.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import re
import time
from collections.abc import Sequence
from contextlib import asynccontextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from swagger_ui_bundle import swagger_ui_path
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from kinema import __version__
from kinema.pipelines import available_models, check_sentences
from kinema.world import split_story

from .jobs import MEDIA_TYPES, JobService, JobSpec, QueueFull

PREFERRED_MODEL = "phenaki-shapes"  # the default when installed; else "world"
MAX_PROMPT_CHARS = 500
MAX_STORY_SENTENCES = 100
MAX_STORY_CHARS = MAX_STORY_SENTENCES * (MAX_PROMPT_CHARS + 2)
MAX_BODY_BYTES = 256 * 1024
TOKEN_COOKIE = "kinema_token"
SSE_POLL_SECONDS = 0.2
SSE_KEEPALIVE_SECONDS = 15.0
PAGE = Path(__file__).parent / "static" / "index.html"
JOB_ID = re.compile(r"[0-9a-f]{32}")


def default_model() -> str:
    """The model for requests that name none when the server is given none (create_app's
    `model`): phenaki-shapes when it is installed, else the world's renderer."""
    return PREFERRED_MODEL if PREFERRED_MODEL in available_models() else "world"


def check_model(model: str) -> str:
    """`model` if it is one `load_pipeline` knows by name; else ValueError listing those."""
    if model not in (known := available_models()):
        raise ValueError(f"unknown model {model!r}; known models: {', '.join(known)}")
    return model


# ---------------------------------------------------------------- request and response


class VideoRequest(BaseModel):
    """A prompt (one event of 16 frames) or a story (one event per sentence)."""

    # no NaN or infinity: pydantic would call NaN "not less than or equal to 30"
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    prompt: str | None = Field(None, max_length=MAX_PROMPT_CHARS, description="What happens, e.g. 'a red circle moves up at night'.")
    story: list[str] | Annotated[str, Field(max_length=MAX_STORY_CHARS)] | None = Field(
        None, description="A list of sentences, or one paragraph split at full stops (at most 100 sentences)."
    )
    model: str | None = Field(None, description="A name from GET /v1/models; the server's default (GET /v1/models) if not given.")
    seed: int = Field(0, ge=0, le=2**31 - 1)
    steps: int | None = Field(None, ge=1, le=100, description="Sampling steps (the model's default if not given).")
    guidance: float | None = Field(None, ge=0, le=30, description="Classifier-free guidance scale (the model's default if not given).")
    format: Literal["mp4", "webm", "gif", "npy"] = "mp4"

    @field_validator("model")
    @classmethod
    def _known_model(cls, model: str | None) -> str | None:
        return None if model is None else check_model(model)

    @field_validator("prompt")
    @classmethod
    def _stripped_prompt(cls, prompt: str | None) -> str | None:
        if prompt is None:
            return None
        if not prompt.strip():
            raise ValueError("the prompt is empty")
        return prompt.strip()

    @field_validator("story")
    @classmethod
    def _story_sentences(cls, story: list[str] | str | None) -> list[str] | None:
        """A story as its checked sentences (a paragraph split at full stops), each at most
        MAX_PROMPT_CHARS long like a prompt; the pipeline's checks with a lower maximum."""
        if story is None:
            return None
        sentences = check_sentences(split_story(story) if isinstance(story, str) else story, MAX_STORY_SENTENCES)
        for number, sentence in enumerate(sentences, start=1):
            if len(sentence) > MAX_PROMPT_CHARS:
                raise ValueError(f"sentence {number} of the story has {len(sentence)} characters; at most {MAX_PROMPT_CHARS}")
        return sentences

    @model_validator(mode="after")
    def _prompt_or_story(self) -> VideoRequest:
        if (self.prompt is None) == (self.story is None):
            raise ValueError("give exactly one of 'prompt' (one sentence) or 'story' (a list of sentences or a paragraph)")
        return self

    def sentences(self) -> list[str]:
        """The sentences to act out, checked and stripped by the validators."""
        return [self.prompt] if self.prompt is not None else self.story


class VideoJob(BaseModel):
    id: str
    status: Literal["queued", "running", "done", "failed"]
    progress: int = Field(description="0-100; 100 once the file is there.")
    model: str
    format: str
    prompt: str | None
    story: list[str] | None
    seed: int
    steps: int | None
    guidance: float | None
    attempts: int = Field(description="Times a worker started this job (a crash mid-run means another start).")
    error: str | None
    queued_at: str
    started_at: str | None
    finished_at: str | None
    seconds: float | None = Field(description="Time to make the video, from start to finish.")
    content_url: str
    events_url: str


def _iso(t: float | None) -> str | None:
    return None if t is None else datetime.fromtimestamp(t, timezone.utc).isoformat(timespec="milliseconds")


def public(job: dict) -> VideoJob:
    sentences = json.loads(job["sentences"])
    seconds = job["finished_at"] - job["started_at"] if job["finished_at"] and job["started_at"] else None
    return VideoJob(
        id=job["id"],
        status=job["status"],
        progress=job["progress"],
        model=job["model"],
        format=job["format"],
        prompt=None if job["is_story"] else sentences[0],
        story=sentences if job["is_story"] else None,
        seed=job["seed"],
        steps=job["steps"],
        guidance=job["guidance"],
        attempts=job["attempts"],
        error=job["error"],
        queued_at=_iso(job["queued_at"]),
        started_at=_iso(job["started_at"]),
        finished_at=_iso(job["finished_at"]),
        seconds=None if seconds is None else round(seconds, 3),
        content_url=f"/v1/videos/{job['id']}/content",
        events_url=f"/v1/videos/{job['id']}/events",
    )


def _unprocessable(errors: Sequence[dict]) -> JSONResponse:
    """The one 422 body: pydantic's errors, each in words a client can act on, and joined
    in one line as 'detail', e.g. 'prompt: String should have at most 500 characters'."""
    shown, parts = [], []
    for error in errors:
        loc = list(error.get("loc", ()))
        where = ".".join(str(x) for x in loc if x not in ("body", "query", "path"))
        message = str(error.get("msg", "invalid")).removeprefix("Value error, ")
        if error.get("type") == "json_invalid":  # its loc ends with a bare character offset
            where, message = "", f"the request body is not valid JSON ({error.get('ctx', {}).get('error', 'syntax error')} at character {loc[-1]})"
        shown.append({"loc": loc, "msg": message, "type": error.get("type")})
        parts.append(f"{where}: {message}" if where else message)
    return JSONResponse({"detail": "; ".join(parts) or "invalid request", "errors": shown}, status_code=422)


# ---------------------------------------------------------------- the app


class _BodyLimit:
    """Refuse request bodies over MAX_BODY_BYTES (413): at once by their Content-Length,
    else (a chunked body has none) by counting bytes as they arrive, so that no body is
    ever read past the limit."""

    detail = f"the request body is over {MAX_BODY_BYTES // 1024} KiB"

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY_BYTES):
            return await JSONResponse({"detail": self.detail}, status_code=413)(scope, receive, send)
        received = 0

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > MAX_BODY_BYTES:
                # raised inside the route's read of the body: FastAPI passes an HTTPException
                # on to its handler, which answers 413
                raise HTTPException(413, self.detail)
            return message

        await self.app(scope, counted, send)


def create_app(data_dir: str | Path, *, workers: int = 1, queue_size: int = 100, token: str | None = None, model: str | None = None) -> FastAPI:
    """The service over `data_dir` (jobs.db and videos/). Raises DataDirBusy if another
    server holds that folder. Workers start with the app and stop with it. `model` is the
    default for requests that name none."""
    if token is not None and not token:
        raise ValueError("the token is empty")
    default = default_model() if model is None else check_model(model)
    page = PAGE.read_text(encoding="utf-8")
    service = JobService(data_dir, workers=workers, queue_size=queue_size)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="kinema",
        version=__version__,
        summary="Text to video: submit a prompt or a story, follow its progress, fetch the video.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,  # served below, behind the token
    )
    app.state.service = service
    app.add_middleware(_BodyLimit)
    bearer = HTTPBearer(auto_error=False, description="Needed when the server was started with --token.")
    expected = token.encode() if token else None

    def require_token(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if expected is None:
            return
        given = credentials.credentials if credentials else None
        if given is None and request.method in ("GET", "HEAD"):
            cookie = request.cookies.get(TOKEN_COOKIE)
            given = unquote(cookie) if cookie else None
        if given is None or not hmac.compare_digest(given.encode(), expected):
            raise HTTPException(401, "this server needs a token: send 'Authorization: Bearer <token>'", headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(RequestValidationError)
    async def _invalid_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _unprocessable(exc.errors())

    api = APIRouter(dependencies=[Depends(require_token)])

    def find(job_id: str) -> dict:
        job = service.get(job_id) if JOB_ID.fullmatch(job_id) else None
        if job is None:
            raise HTTPException(404, f"no video job {job_id!r}")
        return job

    @api.post("/v1/videos", status_code=202, response_model=VideoJob, tags=["videos"],
              responses={422: {"description": "The request is invalid; 'detail' says why."}, 429: {"description": "The queue is full; see Retry-After."}})
    def create_video(request: VideoRequest) -> JSONResponse:
        """Queue a video; follow it at `events_url` or by polling, fetch it at `content_url`."""
        spec = JobSpec(sentences=request.sentences(), model=request.model or default, format=request.format, seed=request.seed,
                       steps=request.steps, guidance=request.guidance, is_story=request.story is not None)
        try:
            job = service.submit(spec)
        except QueueFull as e:
            return JSONResponse({"detail": str(e)}, status_code=429, headers={"Retry-After": str(e.retry_after)})
        body = public(job)
        return JSONResponse(body.model_dump(), status_code=202, headers={"Location": f"/v1/videos/{body.id}"})

    @api.get("/v1/videos", response_model=list[VideoJob], tags=["videos"])
    def list_videos(limit: Annotated[int, Query(ge=1, le=100)] = 20) -> list[VideoJob]:
        """The most recent jobs, newest first."""
        return [public(job) for job in service.recent(limit)]

    @api.get("/v1/videos/{job_id}", response_model=VideoJob, tags=["videos"])
    def get_video(job_id: str) -> VideoJob:
        return public(find(job_id))

    @api.get("/v1/videos/{job_id}/content", tags=["videos"], response_class=FileResponse,
             responses={200: {"content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))}}, 409: {"description": "Not done yet."}})
    def get_content(job_id: str) -> FileResponse:
        """The video file (video/mp4, video/webm, image/gif, or raw .npy frames)."""
        job = find(job_id)
        if job["status"] != "done":
            raise HTTPException(409, f"video {job_id} is {job['status']}, not done" + (f": {job['error']}" if job["error"] else ""))
        path = service.video_path(job["id"], job["format"])
        if not path.is_file():
            raise HTTPException(410, f"the file of video {job_id} is gone from the server's data folder")
        return FileResponse(path, media_type=MEDIA_TYPES[job["format"]], filename=path.name, content_disposition_type="inline")

    @api.get("/v1/videos/{job_id}/events", tags=["videos"], response_class=StreamingResponse,
             responses={200: {"content": {"text/event-stream": {}}}})
    async def video_events(job_id: str, request: Request) -> StreamingResponse:
        """Server-sent events, one `data: {"id", "status", "progress", "error"}` per change,
        ending after status done or failed."""
        await run_in_threadpool(find, job_id)

        async def stream():
            yield "retry: 2000\n\n"
            last, last_sent = None, time.monotonic()
            # no check of the service stopping: uvicorn ends open streams (after
            # timeout_graceful_shutdown) before the lifespan stops the service
            while True:
                job = await run_in_threadpool(service.get, job_id)
                state = {"id": job_id, "status": job["status"], "progress": job["progress"], "error": job["error"]}
                if state != last:
                    last, last_sent = state, time.monotonic()
                    yield f"data: {json.dumps(state)}\n\n"
                    if state["status"] in ("done", "failed"):
                        return
                elif time.monotonic() - last_sent > SSE_KEEPALIVE_SECONDS:
                    last_sent = time.monotonic()
                    yield ": keep-alive\n\n"
                if await request.is_disconnected():
                    return
                await asyncio.sleep(SSE_POLL_SECONDS)

        return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

    @api.get("/v1/models", tags=["models"])
    def list_models() -> dict:
        """Models a job may name, and the one used when it names none."""
        return {"models": available_models(), "default": default}

    @api.get("/openapi.json", include_in_schema=False)
    def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @api.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        # Swagger UI's scripts come from the swagger-ui-bundle package, not a CDN: the
        # service must document itself on a machine with no internet
        return get_swagger_ui_html(
            openapi_url="/openapi.json", title="kinema API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js", swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    app.include_router(api)
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")

    @app.get("/healthz", tags=["health"])
    def healthz() -> dict:
        """Liveness, and how many jobs are in each state. Needs no token."""
        return {"status": "ok", "version": __version__, "workers": service.workers, "jobs": service.store.counts()}

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page, headers={"Cache-Control": "no-cache"})

    return app
