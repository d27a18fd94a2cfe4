"""The REST API (FastAPI): `uvicorn crewdash.api:app`, built in `crewdash.api.app`.

`app` loads on first use, so importing a router or the middleware alone builds no app."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name == "app":
        from crewdash.api.app import app

        # Importing the submodule `crewdash.api.app` bound the name `app` here to that module;
        # bind it to the ASGI app instead: uvicorn looks `crewdash.api:app` up twice (once to
        # check it, once to run it), and the second look-up must not find the module.
        globals()["app"] = app
        return app
    raise AttributeError(f"module 'crewdash.api' has no attribute {name!r}")
