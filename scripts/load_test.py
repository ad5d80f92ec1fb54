"""A bounded load run of `kinema serve`, on loopback only; it stops by itself.

    python scripts/load_test.py                      # 200 concurrent submissions, 2 workers
    python scripts/load_test.py --submissions 40 --workers 1 --queue-size 10

1. Start a server on a free loopback port with a fresh data folder and the "world" model.
2. Send every submission at once (httpx, async): each must be accepted (202) or refused
   with 429 and a Retry-After header; nothing else.
3. Poll the accepted jobs; once about a third are done, `kill -9` the server mid-run.
4. Start it again on the same data folder and poll until every accepted job has ended:
   all must end `done` and none may be missing.

Prints jobs/min, p50/p95 latency of submission and status calls, and the server's peak
RSS (VmHWM, both lives). `Server` is also what tests/test_serve.py starts servers with.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

STORY = ["a red circle moves right at night", "the red circle moves left", "the red circle moves right"]
FORMATS = ("mp4", "gif", "npy", "webm")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def story(sentences: int) -> list[str]:
    """A story the world can act out: a circle moving left and right, `sentences` events."""
    return [STORY[0]] + [STORY[1 + i % 2] for i in range(sentences - 1)]


class Server:
    """`python -m kinema.serve` in a subprocess on a free loopback port; logs go to
    `log` (never a pipe: a full pipe would stall the server)."""

    def __init__(self, data: str | os.PathLike, *args: str, token: str | None = None, host: str = "127.0.0.1", model: str = "world") -> None:
        self.data = Path(data)
        self.args = [*args, "--default-model", model]  # the service, not a model, is under test
        self.token = token
        self.host = host
        self.port = free_port()
        self.url = f"http://{host}:{self.port}"
        self.log = self.data.parent / f"{self.data.name}.server.log"
        self.process: subprocess.Popen | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "kinema.serve", "--host", self.host, "--port", str(self.port), "--data", str(self.data), *self.args]

    def start(self, timeout: float = 60.0) -> Server:
        env = os.environ | {"HF_HUB_OFFLINE": "1", "PYTHONUNBUFFERED": "1"}
        env.pop("KINEMA_TOKEN", None)
        if self.token is not None:
            env["KINEMA_TOKEN"] = self.token  # by environment, so it is not in `ps`
        with open(self.log, "ab") as log:
            self.process = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, env=env)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.TransportError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the server did not answer within {timeout} s:\n{self.log.read_text()[-3000:]}")

    def peak_rss_mib(self) -> float:
        """The server's peak resident memory so far (VmHWM), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def kill(self) -> None:
        """kill -9: no shutdown code runs, as in a crash."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


async def _submit_all(url: str, bodies: list[dict]) -> list[tuple[int, dict, dict, float]]:
    limits = httpx.Limits(max_connections=len(bodies), max_keepalive_connections=len(bodies))
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:

        async def submit(body: dict):
            start = time.perf_counter()
            response = await client.post("/v1/videos", json=body)
            return response.status_code, response.json(), dict(response.headers), time.perf_counter() - start

        return await asyncio.gather(*(submit(b) for b in bodies))


async def _poll(url: str, ids: list[str], latencies: list[float], until_done: int | None = None, timeout: float = 600) -> dict[str, dict]:
    """Poll every unfinished job (32 at a time) until all have ended, or until
    `until_done` of them are done; returns the last state seen of each job."""
    jobs: dict[str, dict] = {}
    limit = asyncio.Semaphore(32)
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=url, timeout=30) as client:

        async def status(job_id: str) -> None:
            async with limit:
                start = time.perf_counter()
                response = await client.get(f"/v1/videos/{job_id}")
                latencies.append(time.perf_counter() - start)
                response.raise_for_status()
                jobs[job_id] = response.json()

        while time.monotonic() < deadline:
            pending = [i for i in ids if jobs.get(i, {}).get("status") not in ("done", "failed")]
            if not pending:
                return jobs
            await asyncio.gather(*(status(i) for i in pending))
            done = sum(j["status"] == "done" for j in jobs.values())
            if until_done is not None and done >= until_done:
                return jobs
            await asyncio.sleep(0.2)
    raise TimeoutError(f"jobs still unfinished after {timeout} s")


def run_load(submissions: int = 200, *, workers: int = 2, queue_size: int = 100, sentences: int = 12, data: Path | None = None, kill: bool = True) -> dict:
    """The whole run; returns its figures (raises AssertionError if a job was lost)."""
    with tempfile.TemporaryDirectory(prefix="kinema-load-") as tmp:
        data = Path(tmp) / "data" if data is None else data
        args = ["--workers", str(workers), "--queue-size", str(queue_size)]
        bodies = [
            {"story": story(sentences), "model": "world", "seed": i, "format": FORMATS[i % len(FORMATS)]} if i % 2 == 0
            else {"prompt": "a red circle moves up at night", "model": "world", "seed": i, "format": FORMATS[i % len(FORMATS)]}
            for i in range(submissions)
        ]
        server = Server(data, *args).start()
        peak_rss = 0.0
        status_latencies: list[float] = []
        try:
            t0 = time.perf_counter()
            answers = asyncio.run(_submit_all(server.url, bodies))
            codes = [code for code, *_ in answers]
            odd = sorted({c for c in codes if c not in (202, 429)})
            assert not odd, f"submissions answered with {odd}, expected only 202 or 429"
            assert all("retry-after" in headers for code, _, headers, _ in answers if code == 429), "a 429 came without Retry-After"
            accepted = [body["id"] for code, body, _, _ in answers if code == 202]
            submit_latencies = [seconds for *_, seconds in answers]
            killed_with = None
            if kill:
                seen = asyncio.run(_poll(server.url, accepted, status_latencies, until_done=max(1, len(accepted) // 3)))
                peak_rss = server.peak_rss_mib()
                server.kill()
                killed_with = {s: sum(j["status"] == s for j in seen.values()) for s in ("queued", "running", "done", "failed")}
                killed_at = time.perf_counter()
                server = Server(data, *args).start()  # same data folder, a new port
                downtime = time.perf_counter() - killed_at
            else:
                downtime = 0.0
            final = asyncio.run(_poll(server.url, accepted, status_latencies))
            elapsed = time.perf_counter() - t0
            peak_rss = max(peak_rss, server.peak_rss_mib())
        finally:
            server.stop()
        lost = [i for i in accepted if i not in final]
        not_done = {i: final[i]["status"] + (f" ({final[i]['error']})" if final[i]["error"] else "") for i in accepted if i in final and final[i]["status"] != "done"}
        assert not lost, f"{len(lost)} accepted job(s) lost"
        assert not not_done, f"{len(not_done)} accepted job(s) did not end done: {list(not_done.values())[:3]}"
        return {
            "submissions": submissions,
            "accepted": len(accepted),
            "refused_429": codes.count(429),
            "workers": workers,
            "queue_size": queue_size,
            "killed_with": killed_with,
            "rerun_after_kill": sum(final[i]["attempts"] > 1 for i in accepted),
            "seconds": round(elapsed, 2),
            "restart_seconds": round(downtime, 2),
            "jobs_per_min": round(len(accepted) / elapsed * 60, 1),
            "submit_p50_ms": round(percentile(submit_latencies, 50) * 1000, 1),
            "submit_p95_ms": round(percentile(submit_latencies, 95) * 1000, 1),
            "status_p50_ms": round(percentile(status_latencies, 50) * 1000, 1),
            "status_p95_ms": round(percentile(status_latencies, 95) * 1000, 1),
            "status_calls": len(status_latencies),
            "peak_rss_mib": round(peak_rss, 1),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--submissions", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--queue-size", type=int, default=100)
    parser.add_argument("--sentences", type=int, default=12, help="events per story job (half the jobs are stories)")
    parser.add_argument("--no-kill", action="store_true", help="skip the kill -9 and restart")
    args = parser.parse_args()
    figures = run_load(args.submissions, workers=args.workers, queue_size=args.queue_size, sentences=args.sentences, kill=not args.no_kill)
    width = max(map(len, figures))
    for key, value in figures.items():
        print(f"{key:>{width}}: {value}")
    print(f"summary: {figures['accepted']}/{figures['submissions']} accepted ({figures['refused_429']} answered 429), all done{' after a kill -9' if figures['killed_with'] else ''}; "
          f"{figures['jobs_per_min']} jobs/min; submit p50/p95 {figures['submit_p50_ms']}/{figures['submit_p95_ms']} ms; "
          f"status p50/p95 {figures['status_p50_ms']}/{figures['status_p95_ms']} ms; peak RSS {figures['peak_rss_mib']} MiB")


if __name__ == "__main__":
    main()
