"""`kinema serve`: an HTTP service and a web page for making videos, persisted in SQLite.

    from kinema.serve import create_app
    app = create_app("kinema-data", workers=1, token=None)   # a FastAPI app; run it with uvicorn

See `app.py` for the routes and `jobs.py` for how jobs survive a crash. Imports are lazy,
so `kinema.serve.cli` (and `kinema --help`) load without fastapi.
"""

__all__ = ["JobService", "JobSpec", "JobStore", "QueueFull", "create_app"]


def __getattr__(name: str):
    if name == "create_app":
        from .app import create_app

        return create_app
    if name in __all__:
        from . import jobs

        return getattr(jobs, name)
    raise AttributeError(f"module 'kinema.serve' has no attribute {name!r}")
