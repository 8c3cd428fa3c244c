"""The fuzz tests reuse the gateway tests' real `aiir serve` process and MLflow store."""

from tests.gateway.conftest import gateway, gw_env, mlflow_store  # noqa: F401
