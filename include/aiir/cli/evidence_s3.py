"""``aiir evidence upload|download`` and the ``s3://`` side of ``aiir verify``: bundles under S3 Object Lock.

The S3 client is boto3's default chain (``AWS_PROFILE``, ``AWS_REGION``/``AWS_DEFAULT_REGION``,
``AWS_ENDPOINT_URL`` for a VPC endpoint or a local test server) with botocore's standard retries.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, progress
from aiir.errors import EXIT_INCIDENT

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def verify_s3_cmd(uri: str, public_key: Path | None, as_json: bool, *, deep: bool = False, trusted_keys=(),
                  trust_store: Path | None = None, allow_unknown_key: bool = False) -> None:
    """Called by ``aiir verify`` for ``s3://`` arguments (nothing is written to the bucket)."""
    from aiir.evidence.s3 import aws_errors, verify_s3

    with aws_errors(uri):
        res = verify_s3(uri, public_key, deep=deep, trusted_keys=trusted_keys, trust_store=trust_store,
                        allow_unknown_key=allow_unknown_key)
    if as_json:
        emit_json(res.to_dict())
    else:
        if not res.ok:
            typer.echo(f"NOT INTACT: {res.path}")
        for m in res.messages:
            typer.echo(m)
    if not res.ok:
        raise typer.Exit(EXIT_INCIDENT)


@guarded
def upload_cmd(
    incident: Annotated[str, typer.Argument(help="Incident id (a sealed bundle in the store) or a bundle folder.")],
    uri: Annotated[str, typer.Argument(help="Where the bundle goes: s3://bucket/prefix (Object Lock enabled).")],
    retain_days: Annotated[float, typer.Option("--retain-days", help="Object Lock retention in days.")] = 3650,
    mode: Annotated[str, typer.Option("--mode", help="COMPLIANCE (nobody can delete) or GOVERNANCE.")] = "COMPLIANCE",
    store: Annotated[Path | None, typer.Option("--store", help="Evidence store folder.")] = None,
    key: Annotated[Path | None, typer.Option("--key", help="Signing key for the 'exported' custody entry "
                                             "(default $AIIR_HOME/keys/evidence_ed25519.pem).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy a sealed bundle to S3 with Object Lock retention and SHA-256 checksums (repeating is a no-op)."""
    from aiir.cli.evidence import _resolve_bundle
    from aiir.evidence import load_or_create_signing_key
    from aiir.evidence.s3 import aws_errors, upload_bundle

    path = _resolve_bundle(incident, store)
    progress(f"uploading {path} to {uri} ({mode}, {retain_days:g} days)")
    with aws_errors(uri):
        out = upload_bundle(path, uri, retain_days=retain_days, mode=mode, context={"via": "aiir evidence upload"},
                            signing_key=load_or_create_signing_key(key))
    if as_json:
        emit_json(out)
    else:
        typer.echo(f"{out['uri']}: {len(out['written'])} objects written, {len(out['already_there'])} already there; "
                   f"{out['mode']} until {out['retain_until']}")


@guarded
def download_cmd(
    uri: Annotated[str, typer.Argument(help="s3://bucket/prefix of a bundle.")],
    dest: Annotated[Path, typer.Argument(help="New local folder (then: aiir verify DEST).")],
) -> None:
    """Copy a bundle from S3 to a local folder that ``aiir verify`` checks like any bundle."""
    from aiir.evidence.s3 import aws_errors, download_bundle

    with aws_errors(uri):
        typer.echo(str(download_bundle(uri, dest)))


def register(ev: typer.Typer) -> None:
    ev.command("upload")(upload_cmd)
    ev.command("download")(download_cmd)
