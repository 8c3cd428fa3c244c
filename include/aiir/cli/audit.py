"""``aiir trace``, ``aiir sign`` and the model/dataset side of ``aiir verify``.

Exit codes: 0 intact / every traced decision accounted for; 3 something changed, does not verify, or a
decision is missing (each named); 2 bad input.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, progress
from aiir.errors import EXIT_INCIDENT, BadInput


def verify_artifact(ref: str, *, trusted_key: list[str] | None = None, cert_chain: list[Path] | None = None,
                    signature: Path | None = None, as_json: bool = False) -> None:
    """``aiir verify model:NAME/V | dataset:PATH | PATH`` (called by ``aiir verify``)."""
    from aiir.audit.integrity import verify_ref

    for k in trusted_key or []:
        if not Path(k).is_file():
            raise BadInput(k, "--trusted-key for a model or dataset must be a PEM file (ECDSA public key or "
                              "certificate)")
    res = verify_ref(ref, trusted_keys=trusted_key, cert_chain=cert_chain, signature=signature)
    if as_json:
        emit_json(res)
    else:
        if not res["ok"]:
            typer.echo(f"NOT INTACT: {ref}")
        else:
            typer.echo(f"INTACT: {ref}")
        for m in res["messages"]:
            typer.echo(m)
    if not res["ok"]:
        raise typer.Exit(EXIT_INCIDENT)


def _keys(key_file: list[Path] | None, decrypt: bool) -> list[bytes] | None:
    from aiir.audit.fieldcrypt import load_key, parse_key

    keys = []
    for f in key_file or []:
        try:
            keys.append(parse_key(f.read_text(encoding="ascii", errors="replace"), where=str(f)))
        except OSError as exc:
            raise BadInput(str(f), f"cannot read the decision-log key: {exc.strerror}") from None
    if decrypt and not keys:
        keys.append(load_key(required=True))
    return keys or None


@guarded
def trace_cmd(
    decision_ids: Annotated[list[str], typer.Argument(help="Decision ids (as the gateway returned them).")],
    fmt: Annotated[list[str] | None, typer.Option("--format", "-f", help="json, html, md (repeatable or comma-"
                                                  "separated; default all three; trace.json is always kept).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="Evidence store folder for the sealed audit package "
                                             "(default $AIIR_EVIDENCE_DIR).")] = None,
    target_kind: Annotated[str, typer.Option("--target-kind", help="Serving target kind.")] = "local",
    target_name: Annotated[str | None, typer.Option("--target-name", help="Target (endpoint) name; local: "
                                                    "default every gateway under $AIIR_GATEWAY_DIR.")] = None,
    state_dir: Annotated[Path | None, typer.Option("--state-dir", help="Local gateway state folder.")] = None,
    since: Annotated[str | None, typer.Option(help="Search window start (targets without an id index).")] = None,
    until: Annotated[str | None, typer.Option(help="Search window end.")] = None,
    decrypt: Annotated[bool, typer.Option("--decrypt", help="Decrypt encrypted features with the key in "
                                          "$AIIR_DECISION_LOG_KEY / $AIIR_DECISION_LOG_KEY_FILE.")] = False,
    key_file: Annotated[list[Path] | None, typer.Option("--key-file", help="Decision-log key file (repeatable; "
                                                        "implies --decrypt).")] = None,
    purpose: Annotated[str, typer.Option("--purpose", help="Why (recorded in the access log).")] = "",
    actor: Annotated[str | None, typer.Option("--actor", help="Who (default $AIIR_ACTOR or login).")] = None,
    no_verify: Annotated[bool, typer.Option("--no-verify-artifacts", help="Skip re-verifying model and "
                                            "dataset signatures.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole trace JSON.")] = False,
) -> None:
    """Trace decisions: input and output, model version and artifact digest, signature now, training run,
    datasets, code version, promotions, what served at that moment, incidents. Sealed as an evidence bundle."""
    from aiir.audit.trace import FORMATS, trace

    formats = [f.strip() for x in (fmt or list(FORMATS)) for f in x.split(",") if f.strip()]
    for f in formats:
        if f not in FORMATS:
            raise BadInput("--format", f"unknown format {f!r} (expected {', '.join(FORMATS)})")
    formats = ["json", *[f for f in formats if f != "json"]]
    progress(f"tracing {len(decision_ids)} decision(s)")
    res = trace(decision_ids, target_kind=target_kind, target_name=target_name, state_dir=state_dir, since=since,
                until=until, formats=tuple(formats), out=out, keys=_keys(key_file, decrypt), actor=actor,
                purpose=purpose, verify_artifacts=not no_verify, context={"via": "aiir trace"})
    if as_json:
        emit_json({k: v for k, v in res.items() if k != "decisions"})
    else:
        emit_json({"audit_id": res["audit_id"], "ok": res["ok"], "bundle": res.get("bundle"),
                   "files": res.get("files"),
                   "decisions": [{"decision_id": e["decision_id"], "found": e["found"],
                                  "model": (e.get("model") or {}).get("name"),
                                  "version": (e.get("model") or {}).get("version"),
                                  "signature_now": ((e.get("version") or {}).get("signature") or {}).get("status"),
                                  "problems": e["problems"]} for e in res["decisions"]]})
    if not res["ok"]:
        raise typer.Exit(EXIT_INCIDENT)


@guarded
def sign_cmd(
    ref: Annotated[str, typer.Argument(help="model:NAME/VERSION, or a dataset file / model folder path.")],
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Sign a model version (its artifact folder and training datasets) or a path registered before signing
    existed (key from $AIIR_ARTIFACT_KEY or the default; certificate with $AIIR_ARTIFACT_CERT)."""
    from aiir.audit.integrity import sign_ref

    res = sign_ref(ref)
    emit_json(res) if as_json else typer.echo(f"signed {ref}: {res.get('signature') or res}")


def register(app: typer.Typer) -> None:
    app.command("trace")(trace_cmd)
    app.command("sign")(sign_cmd)
