"""`kinema serve`: a real server in a subprocess on a loopback port, driven over HTTP.

Every test uses the "world" pipeline, which renders in milliseconds; a 100-sentence
world story (~0.5 s) stands in for a slow job where one is needed.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import random
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from kinema.io import read_video
from kinema.pipelines import available_models, load_pipeline

pytest.importorskip("fastapi")
pytest.importorskip("uvicorn")

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("kinema_load_test", ROOT / "scripts" / "load_test.py")
load_test = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(load_test)
Server = load_test.Server

PROMPT = "a red circle moves up at night"
LONG_STORY = load_test.story(100)  # the most sentences a request may have: a slow job
TOKEN = "s3cret-token-for-tests"


def wait(client: httpx.Client, job_id: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/videos/{job_id}").json()
        if job["status"] in ("done", "failed"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")


def wait_running(client: httpx.Client, job_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/videos/{job_id}").json()
        if job["status"] == "running" and job["progress"] > 0:
            return job
        assert job["status"] in ("queued", "running"), f"expected job {job_id} to run for a while, it is {job['status']}"
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} did not start within {timeout} s")


def wait_in_service(service, job_id: str, statuses: tuple[str, ...] = ("done", "failed"), timeout: float = 30) -> dict:
    """Like `wait`, for a JobService driven in this process."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = service.get(job_id)
        if job["status"] in statuses:
            return job
        time.sleep(0.01)
    raise TimeoutError(f"job {job_id} still {job['status']} after {timeout} s")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with Server(tmp_path_factory.mktemp("serve") / "data", "--workers", "2") as s:
        yield s


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


# ---------------------------------------------------------------- making videos


@pytest.mark.parametrize("fmt, media_type", [("mp4", "video/mp4"), ("webm", "video/webm"), ("gif", "image/gif"), ("npy", "application/octet-stream")])
def test_submit_poll_and_fetch_each_format(client, tmp_path, fmt, media_type):
    response = client.post("/v1/videos", json={"prompt": PROMPT, "seed": 3, "format": fmt})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["status"] in ("queued", "running", "done") and len(job["id"]) == 32
    assert response.headers["location"] == f"/v1/videos/{job['id']}"

    job = wait(client, job["id"])
    assert job["status"] == "done" and job["progress"] == 100 and job["error"] is None, job
    assert job["model"] == "world" and job["prompt"] == PROMPT and job["story"] is None and job["attempts"] == 1
    assert job["queued_at"] <= job["started_at"] <= job["finished_at"] and job["seconds"] >= 0

    content = client.get(job["content_url"])
    assert content.status_code == 200 and content.headers["content-type"] == media_type
    path = tmp_path / f"back.{fmt}"
    path.write_bytes(content.content)
    video = read_video(path)
    assert video.frames.shape == (16, 64, 64, 3)
    if fmt == "npy":  # lossless: exactly what the pipeline makes
        expected = load_pipeline("world").story([PROMPT], seed=3).frames
        np.testing.assert_array_equal(video.frames, expected)


def test_story_as_list_or_paragraph(client):
    as_list = client.post("/v1/videos", json={"story": ["a red circle moves right at night", "the red circle moves left"], "format": "npy"}).json()
    as_text = client.post("/v1/videos", json={"story": "a red circle moves right at night. the red circle moves left.", "format": "npy"}).json()
    assert as_list["story"] == as_text["story"] == ["a red circle moves right at night", "the red circle moves left"]
    first, second = wait(client, as_list["id"]), wait(client, as_text["id"])
    assert first["status"] == second["status"] == "done"
    assert client.get(first["content_url"]).content == client.get(second["content_url"]).content


def test_events_stream_progress_until_done(client):
    job = client.post("/v1/videos", json={"story": LONG_STORY, "format": "webm"}).json()  # webm: the slowest to write
    states = []
    with client.stream("GET", job["events_url"]) as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("data: "):
                states.append(json.loads(line.removeprefix("data: ")))
    progress = [s["progress"] for s in states]
    assert states[-1]["status"] == "done" and progress[-1] == 100
    assert progress == sorted(progress) and len(states) >= 2, states


def test_a_story_the_world_cannot_act_out_fails_with_its_reason(client):
    job = client.post("/v1/videos", json={"story": ["a red circle moves up at night", "the blue square moves up"]}).json()
    job = wait(client, job["id"])
    assert job["status"] == "failed" and "no way to act out" in job["error"]
    refused = client.get(job["content_url"])
    assert refused.status_code == 409 and "failed" in refused.json()["detail"]
    after = client.post("/v1/videos", json={"prompt": PROMPT, "format": "npy"}).json()  # the worker lives on
    assert wait(client, after["id"])["status"] == "done"


def test_list_models_health_docs_and_page(client):
    made = [client.post("/v1/videos", json={"prompt": PROMPT, "seed": s, "format": "npy"}).json()["id"] for s in (10, 11)]
    recent = client.get("/v1/videos", params={"limit": 2}).json()
    assert [j["id"] for j in recent] == made[::-1]  # newest first
    assert client.get("/v1/models").json() == {"models": available_models(), "default": "world"}
    health = client.get("/healthz").json()
    assert health["status"] == "ok" and set(health["jobs"]) == {"queued", "running", "done", "failed"}
    assert "/v1/videos" in client.get("/openapi.json").json()["paths"]
    docs = client.get("/docs")
    assert docs.status_code == 200 and "cdn" not in docs.text.lower(), "the docs page must work offline"
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200
    page = client.get("/")
    assert page.status_code == 200 and "EventSource" in page.text and "text/html" in page.headers["content-type"]


def test_unknown_and_unfinished_jobs(client):
    for path in ("/v1/videos/0123456789abcdef0123456789abcdef", "/v1/videos/0123456789abcdef0123456789abcdef/content",
                 "/v1/videos/0123456789abcdef0123456789abcdef/events", "/v1/videos/not-an-id", "/v1/videos/..%2Fjobs.db/content"):
        assert client.get(path).status_code == 404, path
    job = client.post("/v1/videos", json={"story": LONG_STORY}).json()
    early = client.get(job["content_url"])
    assert early.status_code == 409 and "not done" in early.json()["detail"]
    assert wait(client, job["id"])["status"] == "done"


# ---------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "body, message",
    [
        ({}, "give exactly one of 'prompt'"),
        ({"prompt": PROMPT, "story": [PROMPT]}, "give exactly one of 'prompt'"),
        ({"prompt": "   "}, "the prompt is empty"),
        ({"prompt": "x" * 501}, "prompt: String should have at most 500 characters"),
        ({"story": []}, "the story is empty"),
        ({"story": "  "}, "the story is empty"),
        ({"story": [PROMPT, " "]}, "sentence 2 of the story is empty"),
        ({"story": ["x" * 501]}, "sentence 1 of the story has 501 characters"),
        ({"story": [PROMPT] * 101}, "at most 100 sentences, got 101"),
        ({"story": ". ".join([PROMPT] * 101)}, "at most 100 sentences, got 101"),
        ({"prompt": PROMPT, "model": "sora"}, "unknown model 'sora'; known models: world"),
        ({"prompt": PROMPT, "seed": -1}, "seed: Input should be greater than or equal to 0"),
        ({"prompt": PROMPT, "seed": 2**31}, "seed: Input should be less than or equal to 2147483647"),
        ({"prompt": PROMPT, "steps": 0}, "steps: Input should be greater than or equal to 1"),
        ({"prompt": PROMPT, "steps": 101}, "steps: Input should be less than or equal to 100"),
        ({"prompt": PROMPT, "guidance": -0.5}, "guidance: Input should be greater than or equal to 0"),
        ({"prompt": PROMPT, "guidance": 30.5}, "guidance: Input should be less than or equal to 30"),
        ({"prompt": PROMPT, "format": "avi"}, "format: Input should be 'mp4', 'webm', 'gif' or 'npy'"),
        ({"prompt": PROMPT, "output": "/etc/passwd"}, "output: Extra inputs are not permitted"),
    ],
)
def test_invalid_requests_get_422_with_a_clear_message(client, body, message):
    response = client.post("/v1/videos", json=body)
    assert response.status_code == 422
    assert message in response.json()["detail"], response.json()


def test_malformed_json_and_non_finite_numbers_get_plain_messages(client):
    json_body = {"content-type": "application/json"}
    broken = client.post("/v1/videos", content=f'{{"prompt": "{PROMPT}",}}', headers=json_body)
    assert broken.status_code == 422
    assert broken.json()["detail"].startswith("the request body is not valid JSON (Expecting property name"), broken.json()
    for number in ("NaN", "Infinity"):
        response = client.post("/v1/videos", content=f'{{"prompt": "{PROMPT}", "guidance": {number}}}', headers=json_body)
        assert response.status_code == 422 and response.json()["detail"] == "guidance: Input should be a finite number", response.json()


def test_list_limit_is_checked(client):
    assert client.get("/v1/videos", params={"limit": 0}).status_code == 422
    assert client.get("/v1/videos", params={"limit": 101}).status_code == 422


def test_oversized_body_is_refused(client):
    assert client.post("/v1/videos", json={"story": ["x" * 400] * 1000}).status_code == 413


def test_oversized_chunked_body_is_refused(client):
    from kinema.serve.app import MAX_BODY_BYTES

    # valid JSON one byte over the limit (so the server has read it all when it answers),
    # sent chunked: no Content-Length to judge it by
    head, tail = b'{"prompt": "', b'"}'
    body = head + b"x" * (MAX_BODY_BYTES + 1 - len(head) - len(tail)) + tail
    chunks = (body[i : i + 16384] for i in range(0, len(body), 16384))
    response = client.post("/v1/videos", content=chunks, headers={"content-type": "application/json"})
    assert response.status_code == 413 and "request body is over" in response.json()["detail"], response.text


# ---------------------------------------------------------------- security


def test_token_guards_every_route_but_health_and_page(tmp_path):
    with Server(tmp_path / "data", token=TOKEN) as server, httpx.Client(base_url=server.url, timeout=30) as anon:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        assert anon.get("/healthz").status_code == 200
        assert anon.get("/").status_code == 200  # the static page: it holds no data and asks for the token
        for path in ("/v1/models", "/v1/videos", "/docs", "/openapi.json"):
            assert anon.get(path).status_code == 401, path
            assert anon.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401, path
            assert anon.get(path, headers=auth).status_code == 200, path
        refused = anon.post("/v1/videos", json={"prompt": PROMPT})
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert anon.post("/v1/videos", json={"prompt": ""}).status_code == 401  # auth before validation

        job = anon.post("/v1/videos", json={"prompt": PROMPT}, headers=auth)
        assert job.status_code == 202
        job = job.json()
        with httpx.Client(base_url=server.url, headers=auth, timeout=30) as owner:
            assert wait(owner, job["id"])["status"] == "done"
        # the page's cookie reads results (for <video src> and EventSource) but never makes videos
        assert anon.get(job["content_url"]).status_code == 401
        with httpx.Client(base_url=server.url, cookies={"kinema_token": TOKEN}, timeout=30) as page:
            assert page.get(job["content_url"]).status_code == 200
            assert page.post("/v1/videos", json={"prompt": PROMPT}).status_code == 401


def test_refuses_a_public_host_without_a_token(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kinema.serve", "--host", "0.0.0.0", "--data", str(tmp_path / "data")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: refusing to listen on 0.0.0.0 without a token"), result.stderr
    assert not (tmp_path / "data").exists()


def test_unknown_default_model_is_refused_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, "-m", "kinema.serve", "--port", "0", "--data", str(tmp_path / "data"), "--default-model", "nope"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown model 'nope'" in lines[0], result.stderr


def test_a_corrupt_job_database_is_refused_in_one_line(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (data / "jobs.db").write_bytes(random.Random(0).randbytes(8192))
    result = subprocess.run([sys.executable, "-m", "kinema.serve", "--port", "0", "--data", str(data)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "is not a kinema job database" in lines[0] and "move it aside" in lines[0], result.stderr


def test_one_server_per_data_folder(server):
    result = subprocess.run([sys.executable, "-m", "kinema.serve", "--port", "0", "--data", str(server.data)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "another kinema serve is already using" in result.stderr


# ---------------------------------------------------------------- queue and crashes


def test_full_queue_answers_429_with_retry_after(tmp_path):
    with Server(tmp_path / "data", "--workers", "1", "--queue-size", "1") as server, httpx.Client(base_url=server.url, timeout=30) as client:
        running = client.post("/v1/videos", json={"story": LONG_STORY}).json()
        wait_running(client, running["id"])
        waiting = client.post("/v1/videos", json={"story": LONG_STORY})
        assert waiting.status_code == 202
        refused = client.post("/v1/videos", json={"prompt": PROMPT})
        assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
        assert "queue is full" in refused.json()["detail"]
        assert wait(client, running["id"])["status"] == wait(client, waiting.json()["id"])["status"] == "done"
        assert client.post("/v1/videos", json={"prompt": PROMPT}).status_code == 202  # room again


def test_kill_9_mid_run_loses_no_accepted_job(tmp_path):
    data = tmp_path / "data"
    server = Server(data, "--workers", "1").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            ids = [client.post("/v1/videos", json={"story": LONG_STORY, "seed": s}).json()["id"] for s in range(2)]
            ids.append(client.post("/v1/videos", json={"prompt": PROMPT}).json()["id"])
            wait_running(client, ids[0])
    finally:
        server.kill()
    with sqlite3.connect(data / "jobs.db") as db:  # what the crash left behind
        left = dict(db.execute("SELECT id, status FROM jobs").fetchall())
    assert left[ids[0]] == "running" and all(left[i] == "queued" for i in ids[1:]), left

    with Server(data, "--workers", "1") as again, httpx.Client(base_url=again.url, timeout=30) as client:
        jobs = [wait(client, i) for i in ids]
        assert [j["status"] for j in jobs] == ["done"] * 3, jobs
        assert [j["attempts"] for j in jobs] == [2, 1, 1]  # the interrupted job ran again
        for job in jobs:
            assert client.get(job["content_url"]).status_code == 200
    assert sorted(p.name for p in (data / "videos").iterdir()) == sorted(f"{i}.mp4" for i in ids)  # no temporary file left


def test_a_job_that_keeps_crashing_the_server_is_given_up(tmp_path):
    from kinema.serve import JobSpec, JobStore
    from kinema.serve.jobs import MAX_ATTEMPTS

    store = JobStore(tmp_path / "jobs.db")
    crashing, fresh = store.add(JobSpec([PROMPT], "world"))["id"], store.add(JobSpec([PROMPT], "world"))["id"]
    for attempt in range(1, MAX_ATTEMPTS + 1):
        assert store.start(crashing)["attempts"] == attempt  # a worker starts it, then the process dies
        queued_again = store.recover()
        assert queued_again == ([crashing, fresh] if attempt < MAX_ATTEMPTS else [fresh])
    given_up = store.get(crashing)
    assert given_up["status"] == "failed" and f"{MAX_ATTEMPTS} times" in given_up["error"]
    store.close()


def test_stop_queues_again_a_job_whose_worker_is_still_busy(tmp_path, caplog):
    from kinema.serve import JobService, JobSpec

    def slow_loader(name: str):
        time.sleep(2)  # loading a model: no progress step at which to notice the stop
        return load_pipeline(name)

    service = JobService(tmp_path, loader=slow_loader)
    service.start()
    job_id = service.submit(JobSpec([PROMPT], "world"))["id"]
    wait_in_service(service, job_id, statuses=("running",))
    with caplog.at_level(logging.WARNING, logger="kinema.serve"):
        service.stop(timeout=0.5)
        for thread in service._threads:  # the late worker wakes to a closed store
            thread.join(10)
    assert "still busy" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text  # it gave up quietly
    with sqlite3.connect(tmp_path / "jobs.db") as db:
        assert db.execute("SELECT status, attempts FROM jobs WHERE id = ?", (job_id,)).fetchone() == ("queued", 0)

    again = JobService(tmp_path)
    again.start()
    try:
        job = wait_in_service(again, job_id)
        assert job["status"] == "done" and job["attempts"] == 1, job  # the stop did not count as a start
    finally:
        again.stop()


def test_internal_errors_are_logged_and_only_the_worlds_reach_the_client(tmp_path, caplog):
    from kinema.serve import JobService, JobSpec

    secret = str(tmp_path / "server-only" / "transformer" / "model.safetensors")

    def loader(name: str):
        if name == "missing-file":
            raise FileNotFoundError(f"[Errno 2] No such file or directory: '{secret}'")
        if name == "codec":
            raise ValueError(f"[Errno 22] Invalid argument: '{secret}'")  # PyAV's errors are ValueErrors
        return load_pipeline(name)

    service = JobService(tmp_path, loader=loader)
    service.start()
    try:
        with caplog.at_level(logging.ERROR, logger="kinema.serve"):
            internal = [service.submit(JobSpec([PROMPT], model))["id"] for model in ("missing-file", "codec")]
            unreadable = service.submit(JobSpec(["a purple blob dances"], "world"))["id"]
            jobs = [wait_in_service(service, job_id) for job_id in (*internal, unreadable)]
    finally:
        service.stop()
    for job in jobs[:2]:
        assert job["status"] == "failed" and job["error"].startswith("internal error (") and secret not in job["error"], job
    assert [r.levelno for r in caplog.records].count(logging.ERROR) == 2 and secret in caplog.text  # the details are in the log
    assert jobs[2]["status"] == "failed" and "unknown word 'blob'" in jobs[2]["error"], jobs[2]


def test_small_load_run(tmp_path):
    figures = load_test.run_load(40, workers=1, queue_size=10, sentences=6, data=tmp_path / "data")
    assert figures["accepted"] + figures["refused_429"] == 40 and figures["accepted"] >= 10
