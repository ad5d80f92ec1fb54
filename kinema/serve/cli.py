"""`kinema serve`: run the HTTP service and its web page.

Registered in kinema/cli.py as `app.command("serve")(serve_command)`; also runs alone as
`python -m kinema.serve`.
"""

from __future__ import annotations

import ipaddress
import socket
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

USAGE_EXIT = 2


def is_loopback(host: str) -> bool:
    """True for 127.0.0.0/8, ::1 and names that resolve only to them (localhost)."""
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        pass
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(USAGE_EXIT)


def serve_command(
    host: Annotated[str, typer.Option(help="Address to listen on. Anything but loopback needs --token.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.", min=0, max=65535)] = 8000,
    workers: Annotated[int, typer.Option(help="Worker threads making videos; each loads its own copy of a model.", min=1, max=64)] = 1,
    data: Annotated[Path, typer.Option(help="Folder for the job database (jobs.db) and the videos.")] = Path("kinema-data"),
    token: Annotated[
        Optional[str],
        typer.Option(help="Require 'Authorization: Bearer TOKEN' on every route but /healthz (open the page as /#token=TOKEN).", envvar="KINEMA_TOKEN"),
    ] = None,
    queue_size: Annotated[int, typer.Option(help="Jobs that may wait; beyond this, requests get 429 with Retry-After.", min=1)] = 100,
    default_model: Annotated[Optional[str], typer.Option(help="Model for requests that name none (default: phenaki-shapes when installed, else world).")] = None,
) -> None:
    """Serve the HTTP API (/v1/videos, docs at /docs) and the web page (/); jobs survive restarts."""
    if token is not None and not token.strip():
        _fail("the token is empty")
    if not is_loopback(host) and token is None:
        _fail(f"refusing to listen on {host} without a token: anyone who can reach it could use this machine; pass --token (or KINEMA_TOKEN), or keep the default --host 127.0.0.1")
    try:
        import uvicorn

        from .app import create_app
    except ModuleNotFoundError as e:
        _fail(f"the service needs {e.name}: pip install 'kinema[serve]'")
    try:
        app = create_app(data, workers=workers, queue_size=queue_size, token=token, model=default_model)
    except (ValueError, OSError) as e:
        _fail(str(e))
    shown = f"[{host}]" if ":" in host else host
    typer.echo(f"kinema serve: http://{shown}:{port}/ (data: {data}, {workers} worker(s){', token required: open /#token=TOKEN' if token else ''})", err=True)
    uvicorn.run(app, host=host, port=port, log_level="info", timeout_graceful_shutdown=5)


def main() -> None:
    typer.run(serve_command)


if __name__ == "__main__":
    sys.exit(main())
