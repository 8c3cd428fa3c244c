"""``aiir verify`` and ``aiir evidence add|seal|show|list|pubkey``: preserve evidence by hand.

These work with Airflow down: they only touch the evidence store (``$AIIR_EVIDENCE_DIR``) and the
signing key (``$AIIR_HOME/keys/evidence_ed25519.pem`` unless ``--key``).

Exit codes of ``aiir verify``: 0 intact; 3 changed, missing or added files, bad signature, a key that is
not trusted (not in the trust store; ``--allow-unknown-key`` accepts it), broken custody chain or not
sealed; 2 bad input (not a bundle folder, unreadable key or trust store).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from aiir.cli._util import emit_json, guarded, progress
from aiir.errors import EXIT_INCIDENT, BadInput

StoreOpt = Annotated[Path | None, typer.Option("--store", help="Evidence store folder (default $AIIR_EVIDENCE_DIR).")]
ActorOpt = Annotated[str | None, typer.Option("--actor", help="Who is acting (default $AIIR_ACTOR or login name).")]
KeyOpt = Annotated[Path | None, typer.Option("--key", help="Ed25519 signing key PEM (default $AIIR_HOME/keys/"
                                             "evidence_ed25519.pem, created on first use).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON on stdout.")]


def _store(store: Path | None):
    from aiir.evidence import EvidenceStore

    return EvidenceStore(store)


def _resolve_bundle(arg: str, store: Path | None) -> Path:
    p = Path(arg)
    if p.exists():
        return p
    from aiir.evidence import EvidenceStore

    try:
        candidate = EvidenceStore(store).path_for(arg)
    except BadInput:
        candidate = None
    if candidate is not None and candidate.is_dir():
        return candidate
    raise BadInput(arg, "no such bundle folder (give a path, or an incident id in the evidence store)")


@guarded
def verify_cmd(
    bundle: Annotated[str, typer.Argument(help="Bundle folder, or an incident id in the evidence store.")],
    public_key: Annotated[Path | None, typer.Option("--public-key", help="PEM public key the bundle must be "
                                                    "signed with (default: its own key, which must be trusted).")] = None,
    trusted_key: Annotated[list[str] | None, typer.Option("--trusted-key", help="Also trust this key (PEM file or "
                                                          "64-hex fingerprint; for a model or dataset: an ECDSA "
                                                          "PEM file); repeatable.")] = None,
    allow_unknown_key: Annotated[bool, typer.Option("--allow-unknown-key", help="Accept a bundle signed by a key that "
                                                    "is not trusted (checks self-consistency only).")] = False,
    trust_store: Annotated[Path | None, typer.Option("--trust-store", help="Trust store file (default "
                                                     "$AIIR_TRUSTED_KEYS or $AIIR_HOME/keys/trusted_keys).")] = None,
    as_json: JsonOpt = False,
    no_record: Annotated[bool, typer.Option("--no-record", help="Do not log this verification in custody.jsonl "
                                            "(read-only media).")] = False,
    actor: ActorOpt = None,
    store: StoreOpt = None,
    cert_chain: Annotated[list[Path] | None, typer.Option("--cert-chain", help="CA certificates (PEM) for a "
                                                          "certificate-signed model or dataset.")] = None,
    signature: Annotated[Path | None, typer.Option("--signature", help="Signature file of a model folder or "
                                                   "dataset (default: beside it, NAME.sig).")] = None,
) -> None:
    """Verify an evidence bundle (files vs. signed manifest, a trusted signature, custody chain), a registered
    model (model:NAME/VERSION) or a dataset (dataset:PATH, or a path). Exit 0 intact, 3 not (also: signed by a
    key that is not trusted), 2 bad input. BUNDLE may also be s3://bucket/prefix (a bundle uploaded with
    `aiir evidence upload`), checked in place."""
    if bundle.startswith("s3://"):
        from aiir.cli.evidence_s3 import verify_s3_cmd

        return verify_s3_cmd(bundle, public_key, as_json, trusted_keys=trusted_key or (), trust_store=trust_store,
                             allow_unknown_key=allow_unknown_key)
    from aiir.audit.integrity import is_artifact_ref

    if is_artifact_ref(bundle):
        from aiir.cli.audit import verify_artifact

        return verify_artifact(bundle, trusted_key=trusted_key, cert_chain=cert_chain, signature=signature,
                               as_json=as_json)
    from aiir.evidence import verify_bundle

    path = _resolve_bundle(bundle, store)
    res = verify_bundle(path, public_key, trusted_keys=trusted_key or (), trust_store=trust_store,
                        allow_unknown_key=allow_unknown_key, record=not no_record, actor=actor)
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
def add_cmd(
    incident: Annotated[str, typer.Argument(help="Incident id (the bundle folder name).")],
    paths: Annotated[list[Path], typer.Argument(help="Files or folders to preserve.")],
    category: Annotated[str, typer.Option("--category", "-c", help="model, training_data, decision_log, config, "
                                          "target_state, finding, report, forensics, other.")],
    description: Annotated[str, typer.Option("--description", "-d", help="What this is and why it matters.")] = "",
    dest: Annotated[str | None, typer.Option("--as", help="Name inside the bundle (one path only).")] = None,
    actor: ActorOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Copy files or folders into the incident's bundle (write-once; re-adding identical content is a no-op)."""
    if dest is not None and len(paths) != 1:
        raise BadInput("--as", "only with exactly one path")
    bundle = _store(store).open_bundle(incident, actor=actor, context={"via": "aiir evidence add"})
    records = []
    for p in paths:
        progress(f"preserving {p}")
        if p.is_dir():
            records += bundle.add_tree(p, dest, category=category, description=description)
        else:
            records.append(bundle.add_file(p, dest, category=category, description=description))
    if as_json:
        emit_json([r.to_dict() for r in records])
    else:
        for r in records:
            typer.echo(f"{r.sha256}  {r.size:>12}  {r.path}")


@guarded
def seal_cmd(
    incident: Annotated[str, typer.Argument(help="Incident id (the bundle folder name).")],
    key: KeyOpt = None,
    rehash: Annotated[bool, typer.Option("--rehash", help="Re-read every file before signing.")] = False,
    actor: ActorOpt = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sign the bundle's manifest (Ed25519); nothing can be added afterwards. Sealing again is a no-op."""
    from aiir.evidence import fingerprint, load_or_create_signing_key

    signing_key = load_or_create_signing_key(key)
    bundle = _store(store).get(incident, actor=actor, context={"via": "aiir evidence seal"})
    manifest = bundle.seal(signing_key, rehash=rehash)
    if as_json:
        emit_json({"bundle": str(bundle.path), "manifest": manifest})
    else:
        typer.echo(f"sealed {bundle.path}: {manifest['file_count']} files, {manifest['total_bytes']} bytes, "
                   f"key {fingerprint(signing_key)}")


@guarded
def show_cmd(
    incident: Annotated[str, typer.Argument(help="Incident id (the bundle folder name).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Files and custody log of a bundle (reads only)."""
    bundle = _store(store).get(incident)
    files = bundle.files
    custody = bundle.custody()
    sealed = bundle.sealed
    if as_json:
        emit_json({"bundle": str(bundle.path), "sealed": sealed, "files": [f.to_dict() for f in files],
                   "custody": custody})
        return
    typer.echo(f"{bundle.path}  ({'sealed' if sealed else 'open'}, {len(files)} files)")
    for f in files:
        typer.echo(f"  {f.sha256}  {f.size:>12}  {f.category:<14} {f.path}")
    typer.echo("custody:")
    for e in custody:
        what = e.get("file") or e.get("outcome") or ""
        typer.echo(f"  {e.get('seq'):>4} {e.get('at')} {e.get('action'):<9} {e.get('actor')}@{e.get('host')} {what}")


@guarded
def list_cmd(store: StoreOpt = None) -> None:
    """Incident ids that have a bundle."""
    for name in _store(store).incidents():
        typer.echo(name)


@guarded
def pubkey_cmd(key: KeyOpt = None) -> None:
    """Print the signing key's public half (PEM) — hand it to whoever must verify bundles."""
    from aiir.evidence import fingerprint, load_or_create_signing_key, public_key_pem

    k = load_or_create_signing_key(key)
    typer.echo(public_key_pem(k).decode(), nl=False)
    progress(f"fingerprint (sha256 of the raw public key): {fingerprint(k)}")


@guarded
def trust_cmd(
    key: Annotated[str, typer.Argument(help="Public key PEM file, or its 64-hex fingerprint.")],
    comment: Annotated[str, typer.Option("--comment", help="Who this key belongs to.")] = "",
    trust_store: Annotated[Path | None, typer.Option("--trust-store", help="Trust store file (default "
                                                     "$AIIR_TRUSTED_KEYS or $AIIR_HOME/keys/trusted_keys).")] = None,
) -> None:
    """Trust a signing key: `aiir verify` accepts bundles it signed (e.g. the Airflow connection's key)."""
    from aiir.evidence.keys import trust_key, trust_store_path

    fp = trust_key(key, comment, trust_store)
    typer.echo(f"trusted {fp} in {trust_store or trust_store_path()}")


def register(app: typer.Typer) -> None:
    app.command("verify")(verify_cmd)
    ev = typer.Typer(help="Preserve evidence by hand (works with Airflow down).", no_args_is_help=True)
    ev.command("add")(add_cmd)
    ev.command("seal")(seal_cmd)
    ev.command("show")(show_cmd)
    ev.command("list")(list_cmd)
    ev.command("pubkey")(pubkey_cmd)
    ev.command("trust")(trust_cmd)
    from aiir.cli import evidence_s3

    evidence_s3.register(ev)
    app.add_typer(ev, name="evidence")
