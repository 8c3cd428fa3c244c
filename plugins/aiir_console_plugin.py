"""Airflow plugin entry: aiir's incident console in the Airflow UI.

Registers the console's FastAPI app under ``/aiir`` (built lazily on its first request, so components
that only load plugins — the scheduler, workers running containment — import nothing heavy) and two
external views: *Incidents* in the navigation and *Incident* on every DAG run. The operator extra
links live on the operators themselves (``aiir_airflow.links``).

``.airflowignore`` keeps Airflow's plugin scan to this file: the ``aiir_airflow`` package is imported
as a package, never file by file.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from aiir_airflow.ui import URL_PREFIX, LazyApp, external_views


class AiirConsolePlugin(AirflowPlugin):
    name = "aiir_console"
    fastapi_apps = [{"app": LazyApp(), "url_prefix": URL_PREFIX, "name": "aiir incident console"}]
    external_views = external_views()
