"""``aiir serve``, ``aiir traffic``, ``aiir gateway …`` (containment) and ``aiir decisions …``.

Nothing heavy at import time: MLflow, Starlette, uvicorn and httpx load inside the commands.
"""

from __future__ import annotations

from pathlib import Path

import typer

from aiir.cli._util import emit_json, guarded, progress

gateway_app = typer.Typer(help="Containment on the local gateway (thin wrappers over LocalGatewayTarget).",
                          no_args_is_help=True)
keys_app = typer.Typer(help="API keys (client identity that cannot be spoofed): issue, revoke, list.",
                       no_args_is_help=True)
decisions_app = typer.Typer(help="The gateway's decision log: export, import, verify.", no_args_is_help=True)

NAME_OPT = typer.Option(..., "--name", "-n", help="Registered model name served by the gateway.")
URL_OPT = typer.Option(None, "--url", help="Gateway URL (default: $AIIR_GATEWAY_URL or http://127.0.0.1:8080).")
TOKEN_FILE_OPT = typer.Option(None, "--token-file",
                              help="Admin token file (default: <gateway state dir>/<name>/admin.token).")
STATE_DIR_OPT = typer.Option(None, "--state-dir", help="Gateway state dir (default: $AIIR_GATEWAY_DIR/<name>).")
REASON_OPT = typer.Option("", "--reason", "-r", help="Why (recorded in the state and the admin audit log).")


def _target(name: str, url: str | None, token_file: Path | None, state_dir: Path | None):
    from aiir.targets.local import LocalGatewayTarget

    token = None
    if token_file is not None:
        from aiir.errors import BadInput

        if not token_file.is_file():
            raise BadInput(str(token_file), "token file not found")
        token = token_file.read_text().strip()
    return LocalGatewayTarget(name=name, url=url, token=token, state_dir=state_dir)


def _log_path(model: str | None, log: Path | None, state_dir: Path | None) -> Path:
    from aiir import config
    from aiir.errors import BadInput
    from aiir.gateway import DECISIONS_FILE

    if log is not None:
        return log
    if state_dir is not None:
        return state_dir / DECISIONS_FILE
    if not model:
        raise BadInput("--model", "give --model NAME (or --log FILE / --state-dir DIR) to locate the decision log")
    return config.paths().gateway / model / DECISIONS_FILE


# ------------------------------------------------------------------------------------------ serve

@guarded
def serve(
    model: str = typer.Option(..., "--model", "-m", help="Registered model name."),
    alias: str = typer.Option("champion", "--alias", help="Alias of the primary version."),
    fallback_alias: str = typer.Option("last-known-good", "--fallback-alias",
                                       help="Alias of the version isolation falls back to ('' for none)."),
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8080, "--port", "-p"),
    state_dir: Path = typer.Option(None, "--state-dir",
                                   help="State, admin token and decision log (default: $AIIR_GATEWAY_DIR/<model>)."),
    max_body_mb: float = typer.Option(8.0, "--max-body-mb", help="Largest accepted request body, MiB."),
    max_rows: int = typer.Option(10_000, "--max-rows", help="Most rows scored in one request."),
    no_log: bool = typer.Option(False, "--no-log", help="Do not record decisions (benchmarking only)."),
    log_writer: str = typer.Option("process", "--log-writer",
                                   help="Decision-log writer: 'process' (child process, default) or 'thread'."),
    durable: bool = typer.Option(False, "--durable",
                                 help="Answer a request only after its decisions are committed to the log."),
    require_api_key: bool = typer.Option(False, "--require-api-key",
                                         help="Identify clients by API key only (also on when the state dir "
                                              "has an api-keys.json); without it X-Client-Id is trusted."),
    guard: bool = typer.Option(False, "--guard", help="Inline evasion guard: per-client and per-cluster "
                                                      "statistics in the serving path; trips contain the client."),
    guard_reference: Path = typer.Option(None, "--guard-reference",
                                         help="Training data (CSV/Parquet) or `aiir evasion profile` JSON: "
                                              "feature scaling and the outlier model of the guard."),
    guard_thresholds: Path = typer.Option(None, "--guard-thresholds",
                                          help="TOML overriding aiir/evasion/thresholds.toml."),
    playbook_url: str = typer.Option(None, "--playbook-url",
                                     help="Airflow base URL the guard triggers incident_adversarial_evasion on "
                                          "(default $AIIR_AIRFLOW_URL; credentials from the environment)."),
    encrypt_fields: str = typer.Option("", "--encrypt-fields",
                                       help="Features to store AES-GCM encrypted in the decision log, comma-"
                                            "separated, or '*' for all (key: $AIIR_DECISION_LOG_KEY or "
                                            "$AIIR_DECISION_LOG_KEY_FILE)."),
) -> None:
    """Serve MODEL@ALIAS on POST /invocations (MLflow scoring formats), log every decision, and accept
    containment on the /admin API."""
    from aiir.errors import BadInput
    from aiir.gateway.app import run_server

    if not 0 < port < 65536:
        raise BadInput("--port", f"must be 1-65535, got {port}")
    if max_body_mb <= 0:
        raise BadInput("--max-body-mb", "must be > 0")
    if max_rows <= 0:
        raise BadInput("--max-rows", "must be > 0")
    if log_writer not in ("process", "thread"):
        raise BadInput("--log-writer", f"expected process or thread, got '{log_writer}'")
    if not guard and (guard_reference or guard_thresholds or playbook_url):
        raise BadInput("--guard", "--guard-reference, --guard-thresholds and --playbook-url need --guard")
    if guard_reference is not None and not guard_reference.is_file():
        raise BadInput(str(guard_reference), "guard reference file not found")
    if guard_thresholds is not None:
        from aiir.evasion.config import load_config

        load_config(guard_thresholds)
    run_server(model=model, alias=alias, fallback_alias=fallback_alias or None, host=host, port=port,
               state_dir=state_dir, max_body_bytes=int(max_body_mb * 1024 * 1024), max_rows=max_rows,
               log_decisions=not no_log, log_writer=log_writer, durable=durable,
               require_api_key=require_api_key, guard=guard, guard_reference=guard_reference,
               guard_thresholds=guard_thresholds, playbook_url=playbook_url,
               encrypt_fields=[f for f in encrypt_fields.split(",") if f.strip()] or None)


# ------------------------------------------------------------------------------------------ traffic

@guarded
def traffic(
    url: str = typer.Option(None, "--url", help="Gateway base URL (default: $AIIR_GATEWAY_URL)."),
    data: Path = typer.Option(..., "--data", help="CSV or Parquet of rows to replay."),
    rate: float = typer.Option(20.0, "--rate", help="Requests per second."),
    duration: float = typer.Option(5.0, "--duration", help="Seconds to run."),
    clients: str = typer.Option("anonymous", "--clients", help="Comma-separated client ids (round-robin)."),
    label_column: str = typer.Option(None, "--label-column", help="Column to drop before sending."),
    batch: int = typer.Option(1, "--batch", help="Rows per request."),
    concurrency: int = typer.Option(16, "--concurrency", help="Most requests in flight."),
    timeout: float = typer.Option(5.0, "--timeout", help="Per-request timeout, seconds."),
) -> None:
    """Replay rows at RATE requests/s for DURATION seconds with several client ids; print a JSON summary
    (sent, ok, errors, by status, by client, by served version, latency)."""
    from aiir.gateway.traffic import replay

    emit_json(replay(url=url, data=data, rate=rate, duration=duration,
                     clients=[c.strip() for c in clients.split(",") if c.strip()],
                     label_column=label_column, batch=batch, concurrency=concurrency, timeout=timeout))


# ------------------------------------------------------------------------------------------ gateway …

@gateway_app.command("state")
@guarded
def gw_state(name: str = NAME_OPT, url: str = URL_OPT, token_file: Path = TOKEN_FILE_OPT,
             state_dir: Path = STATE_DIR_OPT) -> None:
    """Print the ServingState (routes, containment, loaded versions)."""
    emit_json(_target(name, url, token_file, state_dir).describe().to_dict())


@gateway_app.command("isolate")
@guarded
def gw_isolate(name: str = NAME_OPT,
               fallback_version: str = typer.Option(None, "--fallback-version",
                                                    help="Version to route all traffic to (default: the fallback alias)."),
               quarantine: bool = typer.Option(False, "--quarantine", help="Refuse every scoring request (503)."),
               reason: str = REASON_OPT, url: str = URL_OPT, token_file: Path = TOKEN_FILE_OPT,
               state_dir: Path = STATE_DIR_OPT) -> None:
    """Route all traffic to a fallback version, or quarantine the model."""
    t = _target(name, url, token_file, state_dir)
    emit_json(t.isolate(fallback_version=fallback_version, quarantine=quarantine, reason=reason).to_dict())


@gateway_app.command("block")
@guarded
def gw_block(name: str = NAME_OPT,
             clients: str = typer.Option(..., "--clients", help="Comma-separated client ids."),
             rate_limit: float = typer.Option(None, "--rate-limit",
                                              help="Throttle to this many requests/s instead of refusing."),
             reason: str = REASON_OPT, url: str = URL_OPT, token_file: Path = TOKEN_FILE_OPT,
             state_dir: Path = STATE_DIR_OPT) -> None:
    """Refuse (403) or throttle (429) the named clients."""
    t = _target(name, url, token_file, state_dir)
    ids = [c.strip() for c in clients.split(",") if c.strip()]
    emit_json(t.block_clients(ids, rate_limit_per_s=rate_limit, reason=reason).to_dict())


@gateway_app.command("restore")
@guarded
def gw_restore(name: str = NAME_OPT, reason: str = REASON_OPT,
               follow_alias: bool = typer.Option(False, "--follow-alias",
                                                 help="Also unpin a rolled-back primary: serve the alias again."),
               url: str = URL_OPT, token_file: Path = TOKEN_FILE_OPT, state_dir: Path = STATE_DIR_OPT) -> None:
    """Lift isolation, quarantine, blocks and rate limits (re-resolves the alias unless pinned)."""
    t = _target(name, url, token_file, state_dir)
    emit_json(t.restore(reason=reason, follow_alias=follow_alias).to_dict())


@gateway_app.command("rollback")
@guarded
def gw_rollback(name: str = NAME_OPT, version: str = typer.Option(..., "--version", "-v"),
                reason: str = REASON_OPT, url: str = URL_OPT, token_file: Path = TOKEN_FILE_OPT,
                state_dir: Path = STATE_DIR_OPT) -> None:
    """Serve VERSION as the (pinned) primary with all traffic."""
    emit_json(_target(name, url, token_file, state_dir).rollback(version, reason=reason).to_dict())


@gateway_app.command("canary")
@guarded
def gw_canary(name: str = NAME_OPT, version: str = typer.Option(..., "--version", "-v"),
              share: float = typer.Option(..., "--share", help="0..1 of traffic (0 ends the canary)."),
              reason: str = REASON_OPT, url: str = URL_OPT, token_file: Path = TOKEN_FILE_OPT,
              state_dir: Path = STATE_DIR_OPT) -> None:
    """Send SHARE of traffic to VERSION, the rest to the primary."""
    emit_json(_target(name, url, token_file, state_dir).canary(version, share, reason=reason).to_dict())


# ------------------------------------------------------------------------------------------ gateway keys …

def _keyfile(name: str | None, state_dir: Path | None):
    from aiir import config
    from aiir.errors import BadInput
    from aiir.gateway.apikeys import KeyFile

    if state_dir is None:
        if not name:
            raise BadInput("--name", "give --name MODEL (or --state-dir DIR) to locate the gateway's key file")
        state_dir = config.paths().gateway / name
    return KeyFile(state_dir)


KEYS_NAME_OPT = typer.Option(None, "--name", "-n", help="Model served by the gateway (locates its state dir).")


@keys_app.command("issue")
@guarded
def keys_issue(client: str = typer.Option(..., "--client", "-c", help="Client id the key identifies."),
               label: str = typer.Option("", "--label", help="Free text kept with the key (who, what for)."),
               name: str = KEYS_NAME_OPT, state_dir: Path = STATE_DIR_OPT) -> None:
    """Issue an API key for CLIENT. The key is printed once; only its SHA-256 is stored. Issuing the
    first key turns key mode on (a running gateway picks it up within a second)."""
    kf = _keyfile(name, state_dir)
    out = kf.issue(client, label=label)
    progress(f"API key {out['key_id']} issued to '{client}'; store it now, it is not shown again")
    emit_json(out)


@keys_app.command("revoke")
@guarded
def keys_revoke(key_id: str = typer.Option(None, "--key-id", help="The key's id (see `keys list`)."),
                client: str = typer.Option(None, "--client", "-c", help="Revoke every key of this client."),
                name: str = KEYS_NAME_OPT, state_dir: Path = STATE_DIR_OPT) -> None:
    """Revoke one key, or every key of a client (idempotent)."""
    emit_json({"revoked": _keyfile(name, state_dir).revoke(key_id=key_id, client_id=client)})


@keys_app.command("list")
@guarded
def keys_list(name: str = KEYS_NAME_OPT, state_dir: Path = STATE_DIR_OPT) -> None:
    """Keys with their client, creation and revocation times (never the key or its digest)."""
    kf = _keyfile(name, state_dir)
    emit_json({"key_file": str(kf.path), "key_mode": kf.exists(), "keys": kf.list()})


# ------------------------------------------------------------------------------------------ decisions …

LOG_OPT = typer.Option(None, "--log", help="Decision log file (default: <state dir>/<model>/decisions.db).")
MODEL_OPT = typer.Option(None, "--model", "-m", help="Model name (locates the default decision log).")


@decisions_app.command("export")
@guarded
def dec_export(fmt: str = typer.Option(..., "--format", "-f", help="ecs (Elastic) or hec (Splunk)."),
               out: Path = typer.Option(..., "--out", "-o", help="Output JSON-lines file."),
               model: str = MODEL_OPT, log: Path = LOG_OPT, state_dir: Path = STATE_DIR_OPT,
               since: str = typer.Option(None, "--since", help="ISO time, epoch, or age like 15m/2h/7d."),
               until: str = typer.Option(None, "--until"),
               version: str = typer.Option(None, "--version"),
               client: str = typer.Option(None, "--client"),
               limit: int = typer.Option(None, "--limit")) -> None:
    """Export decisions as ECS or Splunk HEC JSON lines."""
    from aiir.errors import BadInput
    from aiir.gateway.decision_log import DecisionLog

    fmt = fmt.lower()
    if fmt not in ("ecs", "hec"):
        raise BadInput("--format", f"expected ecs or hec, got '{fmt}'")
    dl = DecisionLog(_log_path(model, log, state_dir), create=False)
    fn = dl.export_ecs if fmt == "ecs" else dl.export_hec
    n = fn(out, since=since, until=until, version=version, client=client, limit=limit)
    emit_json({"format": fmt, "out": str(out), "events": n, "log": str(dl.path)})


@decisions_app.command("import-capture")
@guarded
def dec_import(file: Path = typer.Argument(..., help="SageMaker Data Capture JSONL file."),
               model: str = typer.Option(..., "--model", "-m"),
               version: str = typer.Option(..., "--version", "-v"),
               log: Path = LOG_OPT, state_dir: Path = STATE_DIR_OPT,
               columns: str = typer.Option(None, "--columns",
                                           help="Comma-separated feature names for header-less CSV input "
                                                "(default: the model signature, if MLflow has the version)."),
               client: str = typer.Option("sagemaker", "--client", help="Client id to record.")) -> None:
    """Import SageMaker Data Capture records into the decision log (idempotent)."""
    from aiir.gateway.decision_log import DecisionLog

    cols = [c.strip() for c in columns.split(",")] if columns else None
    digest = None
    if cols is None:
        cols, digest = _signature_columns(model, version)
    dl = DecisionLog(_log_path(model, log, state_dir))
    emit_json(dl.import_sagemaker_capture(file, model, version, columns=cols, client_id=client,
                                          artifact_digest=digest))


def _signature_columns(model: str, version: str) -> tuple[list[str] | None, str | None]:
    """Input names and artifact digest of MODEL/VERSION from MLflow, or (None, None) if unavailable."""
    try:
        from aiir import config
        from aiir.gateway.models import ModelStore

        progress(f"reading the signature of {model} v{version} from MLflow")
        lv = ModelStore(model, config.paths().mlflow_tracking_uri).get(version)
        return lv.schema.columns, lv.digest
    except Exception as exc:  # registry absent or version unknown: fall back to f0, f1, …
        progress(f"no signature for {model} v{version} ({type(exc).__name__}); CSV columns become f0, f1, …")
        return None, None


@decisions_app.command("verify")
@guarded
def dec_verify(model: str = MODEL_OPT, log: Path = LOG_OPT, state_dir: Path = STATE_DIR_OPT,
               expected_head: str = typer.Option(None, "--expected-head",
                                                 help="A head hash recorded earlier (detects truncation).")) -> None:
    """Recompute the decision log's hash chain; exit 3 if any row was changed, removed or reordered."""
    from aiir.errors import EXIT_INCIDENT
    from aiir.gateway.decision_log import DecisionLog

    rep = DecisionLog(_log_path(model, log, state_dir), create=False).verify_chain(expected_head=expected_head)
    emit_json(rep.to_dict())
    if not rep.ok:
        raise typer.Exit(EXIT_INCIDENT)


@decisions_app.command("count")
@guarded
def dec_count(model: str = MODEL_OPT, log: Path = LOG_OPT, state_dir: Path = STATE_DIR_OPT,
              version: str = typer.Option(None, "--version"), since: str = typer.Option(None, "--since"),
              until: str = typer.Option(None, "--until")) -> None:
    """Decisions per client (optionally for one version / time window)."""
    from aiir.gateway.decision_log import DecisionLog

    dl = DecisionLog(_log_path(model, log, state_dir), create=False)
    emit_json({"by_client": dl.count_by_client(version=version, since=since, until=until),
               "by_version": dl.count_by_version(since=since, until=until), "head": dl.head()})


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
    app.command("traffic")(traffic)
    gateway_app.add_typer(keys_app, name="keys")
    app.add_typer(gateway_app, name="gateway")
    app.add_typer(decisions_app, name="decisions")
