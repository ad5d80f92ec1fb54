"""Jobs: a SQLite store, a bounded queue, and the worker threads that make the videos.

Every accepted request is a row in `DATA/jobs.db` (SQLite, WAL mode) before the client
hears "202", so a crash loses nothing: on start, jobs still `queued` are queued again and
jobs caught `running` are run again, up to `MAX_ATTEMPTS` starts, after which they end
`failed` with the reason. Videos go to `DATA/videos/<id>.<format>`, named by the job's
uuid4 hex and never by anything a user typed; each appears whole or not at all (the
pipeline writes to a temporary file beside it and renames it).

Workers are threads in the server process (torch releases the GIL while it computes);
each keeps its own models, loaded once, in a dict keyed by model name. Progress lives in
memory for the event stream and is written to SQLite at most every
`PROGRESS_WRITE_INTERVAL` seconds per job.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import queue
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kinema.world import InfeasibleError, ParseError

log = logging.getLogger("kinema.serve")

# format -> media type of the file served back
MEDIA_TYPES = {"mp4": "video/mp4", "webm": "video/webm", "gif": "image/gif", "npy": "application/octet-stream"}
STATUSES = ("queued", "running", "done", "failed")
MAX_ATTEMPTS = 3  # starts of one job (a start interrupted by a crash counts) before it is given up
PROGRESS_WRITE_INTERVAL = 0.5  # seconds; progress reaches SSE clients at once, SQLite at this pace
SCHEMA_VERSION = 1
# The only mistakes of a user's that can reach a worker: the API has checked everything
# else, so any other error is the server's own (logged; the client gets no server paths).
USER_ERRORS = (ParseError, InfeasibleError)  # a sentence the world cannot read, or cannot act out

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq         INTEGER PRIMARY KEY AUTOINCREMENT,  -- order of arrival
    id          TEXT    NOT NULL UNIQUE,            -- uuid4 hex; also the output's file name
    status      TEXT    NOT NULL,                   -- queued | running | done | failed
    model       TEXT    NOT NULL,
    format      TEXT    NOT NULL,                   -- mp4 | webm | gif | npy
    sentences   TEXT    NOT NULL,                   -- JSON list of sentences (a prompt is one)
    is_story    INTEGER NOT NULL,
    seed        INTEGER NOT NULL,
    steps       INTEGER,
    guidance    REAL,
    progress    INTEGER NOT NULL DEFAULT 0,         -- 0..100
    attempts    INTEGER NOT NULL DEFAULT 0,         -- times a worker started it
    error       TEXT,
    queued_at   REAL    NOT NULL,                   -- unix seconds
    started_at  REAL,
    finished_at REAL
);
CREATE INDEX IF NOT EXISTS jobs_by_status ON jobs (status, seq);
"""


@dataclass(frozen=True)
class JobSpec:
    """What to make: checked by the API before it gets here."""

    sentences: list[str]
    model: str
    format: str = "mp4"
    seed: int = 0
    steps: int | None = None
    guidance: float | None = None
    is_story: bool = False


class QueueFull(Exception):
    """The queue holds `queue_size` waiting jobs; try again in `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"the queue is full; try again in {retry_after} s")
        self.retry_after = retry_after


class DataDirBusy(ValueError):
    """Another server already uses this data folder."""


class _Stopping(Exception):
    """Raised inside a progress callback to abandon a job when the server shuts down."""


class JobStore:
    """The jobs table. One connection shared by all threads, each use under a lock;
    autocommit, so every call is its own transaction and durable when it returns."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.closed = False
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        try:
            self._db.execute("PRAGMA journal_mode=WAL")
            # WAL + NORMAL: every commit survives the process dying (kill -9); only `add` pays an
            # fsync (FULL), so an accepted job survives a power cut too. A progress or status
            # update lost that way merely runs the job again.
            self._db.execute("PRAGMA synchronous=NORMAL")
            version = self._db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                raise ValueError(f"{self.path} was written by a newer kinema (schema {version}); upgrade kinema or use another --data folder")
            self._db.executescript(SCHEMA)
            self._db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except BaseException as e:
            self._db.close()
            # not SQLite at all, or a damaged file (a locked one is an OperationalError, and says so)
            if isinstance(e, sqlite3.DatabaseError) and not isinstance(e, sqlite3.OperationalError):
                raise ValueError(f"{self.path} is not a kinema job database ({e}); move it aside or use another --data folder") from None
            raise

    def close(self) -> None:
        """Close the connection; any later use raises sqlite3.ProgrammingError."""
        with self._lock:
            self._db.close()
            self.closed = True

    def _one(self, sql: str, args: tuple = ()) -> dict | None:
        with self._lock:
            row = self._db.execute(sql, args).fetchone()
        return dict(row) if row else None

    def _run(self, sql: str, args: tuple = ()) -> int:
        with self._lock:
            return self._db.execute(sql, args).rowcount

    def add(self, spec: JobSpec) -> dict:
        job_id = uuid.uuid4().hex
        with self._lock:
            self._db.execute("PRAGMA synchronous=FULL")
            try:
                self._db.execute(
                    "INSERT INTO jobs (id, status, model, format, sentences, is_story, seed, steps, guidance, queued_at) "
                    "VALUES (?, 'queued', ?, ?, ?, ?, ?, ?, ?, ?)",
                    (job_id, spec.model, spec.format, json.dumps(spec.sentences), int(spec.is_story), spec.seed, spec.steps, spec.guidance, time.time()),
                )
            finally:
                self._db.execute("PRAGMA synchronous=NORMAL")
        return self.get(job_id)

    def get(self, job_id: str) -> dict | None:
        return self._one("SELECT * FROM jobs WHERE id = ?", (job_id,))

    def recent(self, limit: int) -> list[dict]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM jobs ORDER BY seq DESC LIMIT ?", (limit,)).fetchall()
        return [dict(r) for r in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT status, COUNT(*) FROM jobs GROUP BY status").fetchall()
        return {status: 0 for status in STATUSES} | {s: n for s, n in rows}

    def start(self, job_id: str) -> dict | None:
        """queued → running (one more attempt); None if the job is not queued."""
        changed = self._run(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, progress = 0, started_at = ?, error = NULL "
            "WHERE id = ? AND status = 'queued'",
            (time.time(), job_id),
        )
        return self.get(job_id) if changed else None

    def set_progress(self, job_id: str, progress: int) -> None:
        self._run("UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running'", (progress, job_id))

    def finish(self, job_id: str) -> None:
        self._run("UPDATE jobs SET status = 'done', progress = 100, finished_at = ? WHERE id = ?", (time.time(), job_id))

    def fail(self, job_id: str, error: str) -> None:
        self._run("UPDATE jobs SET status = 'failed', error = ?, finished_at = ? WHERE id = ?", (error, time.time(), job_id))

    # running → queued, the attempt not counted: the server stopped it on purpose
    _REQUEUE = "UPDATE jobs SET status = 'queued', attempts = MAX(attempts - 1, 0), progress = 0, started_at = NULL WHERE status = 'running'"

    def requeue(self, job_id: str) -> None:
        """The running job `job_id` back to the queue, its attempt not counted."""
        self._run(self._REQUEUE + " AND id = ?", (job_id,))

    def requeue_running(self) -> int:
        """Every running job back to the queue, attempts not counted; returns how many."""
        return self._run(self._REQUEUE)

    def recover(self, max_attempts: int = MAX_ATTEMPTS) -> list[str]:
        """After a crash: jobs caught running go back to the queue (or fail after
        `max_attempts` starts); returns every queued job's id, oldest first."""
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                self._db.execute(
                    "UPDATE jobs SET status = 'failed', finished_at = ?, "
                    "error = 'the server stopped while making this video ' || attempts || ' times; it was not tried again' "
                    "WHERE status = 'running' AND attempts >= ?",
                    (time.time(), max_attempts),
                )
                self._db.execute("UPDATE jobs SET status = 'queued', progress = 0, started_at = NULL WHERE status = 'running'")
                ids = [r[0] for r in self._db.execute("SELECT id FROM jobs WHERE status = 'queued' ORDER BY seq")]
                self._db.execute("COMMIT")
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
        return ids


def _default_loader(name: str):
    from kinema.pipelines import load_pipeline

    return load_pipeline(name)


class JobService:
    """The queue and its workers over a `JobStore` in `data_dir`.

    `queue_size` bounds the jobs *waiting* (not those running); jobs recovered after a
    crash are always queued again, even past the bound, since they were accepted."""

    def __init__(
        self,
        data_dir: str | os.PathLike,
        *,
        workers: int = 1,
        queue_size: int = 100,
        loader: Callable[[str], Any] = _default_loader,
    ) -> None:
        if workers < 1 or queue_size < 1:
            raise ValueError("workers and queue_size must be at least 1")
        self.data_dir = Path(data_dir)
        self.videos_dir = self.data_dir / "videos"
        self.videos_dir.mkdir(parents=True, exist_ok=True)
        self.workers = workers
        self.queue_size = queue_size
        self._loader = loader
        # One server per data folder: a second would run the same jobs twice. flock is
        # released by the kernel when the process dies, so a crash leaves no stale lock.
        self._lock_file = open(self.data_dir / "serve.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            raise DataDirBusy(f"another kinema serve is already using {self.data_dir}; give each server its own --data folder") from None
        try:
            self.store = JobStore(self.data_dir / "jobs.db")
        except BaseException:
            self._lock_file.close()  # free the folder for a server that can use it
            raise
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._admit = threading.Lock()
        self._live: dict[str, int] = {}  # running job id -> progress, for the event stream
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._mean_seconds = 1.0  # running mean of a job's time, for Retry-After

    def video_path(self, job_id: str, fmt: str) -> Path:
        return self.videos_dir / f"{job_id}.{fmt}"

    # ---- life cycle
    def start(self) -> None:
        # temporary files of writes that a crash cut short (their names start with ".")
        for leftover in self.videos_dir.glob(".*"):
            if leftover.is_file():
                leftover.unlink()
        recovered = self.store.recover(MAX_ATTEMPTS)
        for job_id in recovered:
            self._queue.put(job_id)
        if recovered:
            log.info("queued %d job(s) again after a restart", len(recovered))
        for index in range(self.workers):
            thread = threading.Thread(target=self._work, name=f"kinema-worker-{index}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the workers: running jobs are abandoned at their next progress step and
        stay queued in the database for the next start, as do jobs not yet started. A
        worker with no progress step to notice (loading a model, encoding) is not waited
        for past `timeout`: its job is queued again here, without counting that start, and
        the worker gives up quietly once it finds the store closed."""
        self._stopping.set()
        for _ in self._threads:
            self._queue.put(None)
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        busy = [thread.name for thread in self._threads if thread.is_alive()]
        if busy:
            log.warning("%s still busy after %.1f s; its job stays queued for the next start", ", ".join(busy), timeout)
        # one server per data folder (the flock), so every running job is one of ours
        self.store.requeue_running()
        self.store.close()
        self._lock_file.close()

    # ---- requests
    def submit(self, spec: JobSpec) -> dict:
        """Store the job, then queue it; QueueFull when `queue_size` jobs already wait."""
        with self._admit:
            waiting = self._queue.qsize()
            if waiting >= self.queue_size:
                raise QueueFull(self.retry_after())
            job = self.store.add(spec)
            self._queue.put(job["id"])
        return job

    def retry_after(self) -> int:
        """Seconds until a place in the queue is likely to free up: one job's time
        shared among the workers."""
        return max(1, min(300, math.ceil(self._mean_seconds / self.workers)))

    def get(self, job_id: str) -> dict | None:
        return self._with_live_progress(self.store.get(job_id))

    def recent(self, limit: int) -> list[dict]:
        """The `limit` newest jobs, newest first."""
        return [self._with_live_progress(job) for job in self.store.recent(limit)]

    def _with_live_progress(self, job: dict | None) -> dict | None:
        """A running job's progress from memory: SQLite hears of it only every
        PROGRESS_WRITE_INTERVAL seconds."""
        if job is not None and job["status"] == "running":
            job["progress"] = max(job["progress"], self._live.get(job["id"], 0))
        return job

    # ---- workers
    def _work(self) -> None:
        pipelines: dict[str, Any] = {}  # this worker's models, each loaded once
        while True:
            job_id = self._queue.get()
            if job_id is None or self._stopping.is_set():
                return
            try:
                self._run(job_id, pipelines)
            except Exception:
                if self.store.closed:  # stop() stopped waiting for this worker and queued its job again
                    return
                # the store itself failed (disk full...): keep serving, and end the job if the
                # store lets us, or its row stays running and its event stream never ends
                log.exception("job %s: could not record its outcome", job_id)
                try:
                    self.store.fail(job_id, "internal error: the server could not record this job's outcome")
                except Exception:
                    log.error("job %s: could not mark it failed either; it runs again at the next start", job_id)

    def _run(self, job_id: str, pipelines: dict[str, Any]) -> None:
        job = self.store.start(job_id)
        if job is None:  # no longer queued (already finished in an earlier life)
            return
        self._live[job_id] = 0
        last_write = time.monotonic()

        def on_progress(done: int, total: int) -> None:
            nonlocal last_write
            if self._stopping.is_set():
                raise _Stopping
            # 100 means "the file is there": hold at 99 until the writer has closed it
            progress = min(99, int(100 * done / total)) if total else 0
            self._live[job_id] = progress
            now = time.monotonic()
            if now - last_write >= PROGRESS_WRITE_INTERVAL:
                self.store.set_progress(job_id, progress)
                last_write = now

        started = time.monotonic()
        try:
            model = job["model"]
            if model not in pipelines:
                pipelines[model] = self._loader(model)
            options = {"num_inference_steps": job["steps"], "guidance_scale": job["guidance"]}
            options = {k: v for k, v in options.items() if v is not None}
            pipelines[model].story(
                json.loads(job["sentences"]),
                seed=job["seed"],
                output=self.video_path(job_id, job["format"]),
                callback=on_progress,
                **options,
            )
        except _Stopping:
            self.store.requeue(job_id)
        except USER_ERRORS as e:
            self.store.fail(job_id, str(e))
        except Exception as e:
            log.exception("job %s failed: internal error", job_id)
            # its message may hold server paths or library internals: those stay in the log
            self.store.fail(job_id, f"internal error ({type(e).__name__}); the server's log has the details")
        else:
            self.store.finish(job_id)
            self._mean_seconds = 0.8 * self._mean_seconds + 0.2 * (time.monotonic() - started)
        finally:
            self._live.pop(job_id, None)
