"""aiir's incident console inside the Airflow UI: a FastAPI app mounted under ``/aiir`` by the plugin
``plugins/aiir_console_plugin.py``, shown through external views (*Incidents* in the navigation,
*Incident* on each DAG run).

The app is built on its first request (:class:`LazyApp`): every Airflow component loads plugins, and a
worker running the containment task must not pay for importing FastAPI and Jinja. Only the API server
ever calls it.
"""

from __future__ import annotations

from typing import Any

URL_PREFIX = "/aiir"


class LazyApp:
    """An ASGI app that imports and builds :func:`aiir_airflow.ui.app.create_app` on the first call."""

    def __init__(self) -> None:
        self._app: Any = None

    def _get(self) -> Any:
        if self._app is None:
            from aiir_airflow.ui.app import create_app

            self._app = create_app()
        return self._app

    async def __call__(self, scope, receive, send) -> None:
        await self._get()(scope, receive, send)

    def __repr__(self) -> str:
        return "aiir_airflow.ui.app:create_app (lazy)"


def external_views() -> list[dict[str, Any]]:
    return [
        {"name": "Incidents", "href": f"{URL_PREFIX}/incidents", "destination": "nav", "url_route": "aiir-incidents",
         "nav_top_level": True, "icon": f"{URL_PREFIX}/static/icon.svg"},
        {"name": "Incident", "href": f"{URL_PREFIX}/runs/{{DAG_ID}}/{{RUN_ID}}", "destination": "dag_run",
         "url_route": "aiir-incident", "icon": f"{URL_PREFIX}/static/icon.svg"},
    ]
