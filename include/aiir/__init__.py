"""aiir — AI incident response: the core library.

This package never imports Airflow. Airflow adapters live in ``plugins/aiir_airflow``;
DAG files in ``dags/`` only wire tasks together.
"""

from __future__ import annotations

__version__ = "0.1.0"
