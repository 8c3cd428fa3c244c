#!/bin/bash
# Run once by the postgres image on an empty data volume: the MLflow database beside Airflow's
# (POSTGRES_DB=airflow is created by the image itself). Same as aiir.deploy.DATABASES.
set -euo pipefail
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres <<-SQL
	CREATE DATABASE mlflow;
SQL
