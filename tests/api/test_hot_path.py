"""The request path's own costs: what every prediction pays before the model is reached."""

from __future__ import annotations

import inspect

from fastapi.routing import APIRoute

from readmission.api import create_app


def _dependencies(dependant) -> list:
    found = []
    for sub in dependant.dependencies:
        found.append(sub.call)
        found.extend(_dependencies(sub))
    return found


def test_no_route_waits_for_a_thread_to_resolve_its_dependencies(settings_for, sample_csv):
    """FastAPI runs a plain `def` dependency in its thread pool: a hop to another thread
    and back (and the GIL handed over twice) for every request, to read an attribute."""
    app = create_app(settings_for(sample_csv))
    routes = [route for route in app.routes if isinstance(route, APIRoute)]
    assert any(route.path == "/predict" for route in routes)
    blocking = {
        f"{route.path}: {call.__qualname__}"
        for route in routes
        for call in _dependencies(route.dependant)
        if not inspect.iscoroutinefunction(call)
    }
    assert not blocking, sorted(blocking)
