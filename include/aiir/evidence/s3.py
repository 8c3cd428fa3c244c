"""Sealed bundles in S3 under Object Lock: upload, verify in place, download.

A sealed local bundle (``bundle.py``: manifest, Ed25519 signature, custody chain) is copied object by object
to ``s3://bucket/prefix/`` with the same relative paths (``files/...``, ``manifest.json``, ``manifest.sig``,
``public_key.pem``, ``custody.jsonl``). Every PUT

* carries ``ChecksumAlgorithm=SHA256`` *and* the SHA-256 the manifest records (``ChecksumSHA256``), so S3
  refuses bytes that differ from the sealed ones and keeps the checksum with the object version;
* sets Object Lock retention (``COMPLIANCE`` by default: no one, the root account included, can delete or
  overwrite that object version, or shorten its retention, until the date passes).

The bucket must have been created with Object Lock enabled (that also turns on versioning); aiir checks.
Uploading again is a no-op for objects already there with the same checksum, refuses (IntegrityError) when a
different object sits under a bundle path, and adds a new version of ``custody.jsonl`` only (the custody log
grows after sealing; older versions stay locked). The local bundle logs an ``exported`` custody entry before
its custody log is uploaded, so the copy in S3 records its own export.

:func:`verify_s3` checks in place: the signature and custody chain on the metadata objects (through
:func:`aiir.evidence.verify_bundle`, so every rule of local verification applies), every file's size and
stored SHA-256 checksum against the manifest (``deep=True`` also re-reads and hashes the bytes), objects that
are not in the manifest (added), later versions written over a sealed object (changed), and whether every
object is still under retention. :func:`download_bundle` makes a local copy that ``aiir verify`` accepts.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import os
import tempfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiir.errors import AiirError, BadInput, IntegrityError

from .bundle import CUSTODY, MANIFEST, PAYLOAD_DIR, PUBLIC_KEY, SIGNATURE
from .verify import VerifyResult, verify_bundle

METADATA = (MANIFEST, SIGNATURE, PUBLIC_KEY, CUSTODY)
LOCK_MODES = ("COMPLIANCE", "GOVERNANCE")
#: what this module calls, for deploy/aws/iam-policy.json
API_CALLS = ("GetObjectLockConfiguration", "HeadObject", "PutObject", "GetObject", "ListObjectsV2",
             "ListObjectVersions")


class S3Error(AiirError):
    """S3 refused or failed a call (after botocore's retries)."""


@contextlib.contextmanager
def aws_errors(uri: str):
    """botocore errors → one line naming the bucket, the call and AWS's code (the CLI prints it)."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        yield
    except ClientError as exc:
        code, msg = _client_error(exc)
        raise S3Error(f"{uri}: {exc.operation_name} failed ({code}: {msg})") from None
    except BotoCoreError as exc:
        raise S3Error(f"{uri}: {exc}") from None


def parse_s3_uri(uri: str, *, where: str = "s3 uri") -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at either end)."""
    if not isinstance(uri, str) or not uri.startswith("s3://"):
        raise BadInput(where, f"{uri!r}: expected s3://bucket/prefix")
    bucket, _, prefix = uri[5:].partition("/")
    if not bucket:
        raise BadInput(where, f"{uri!r}: no bucket name")
    prefix = prefix.strip("/")
    if ".." in prefix.split("/"):
        raise BadInput(where, f"{uri!r}: '..' is not allowed in the prefix")
    return bucket, prefix


def s3_client(*, endpoint_url: str | None = None, region: str | None = None, retry_mode: str = "standard",
              max_attempts: int = 8):
    """A boto3 S3 client with botocore's retries (``AWS_ENDPOINT_URL`` and the usual chain apply)."""
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=endpoint_url, region_name=region,
                        config=Config(retries={"mode": retry_mode, "total_max_attempts": max_attempts},
                                      user_agent_extra="aiir-evidence"))


def _b64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode()


def _hex_of_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _client_error(exc) -> tuple[str, str]:
    err = getattr(exc, "response", {}).get("Error", {})
    return str(err.get("Code", "")), str(err.get("Message", exc))


def _head(client, bucket: str, key: str) -> dict[str, Any] | None:
    from botocore.exceptions import ClientError

    try:
        return client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except ClientError as exc:
        code, _ = _client_error(exc)
        if code in ("404", "NoSuchKey", "NotFound"):
            return None
        raise


def check_lock_enabled(client, bucket: str) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    try:
        conf = client.get_object_lock_configuration(Bucket=bucket).get("ObjectLockConfiguration") or {}
    except ClientError as exc:
        code, msg = _client_error(exc)
        if code == "ObjectLockConfigurationNotFoundError":
            conf = {}
        else:
            raise BadInput(f"s3://{bucket}", f"cannot read its Object Lock configuration ({code}: {msg}); "
                                             "an evidence bucket must be created with Object Lock enabled") from None
    if conf.get("ObjectLockEnabled") != "Enabled":
        raise BadInput(f"s3://{bucket}", "Object Lock is not enabled on this bucket (it can only be chosen when "
                                         "the bucket is created: create-bucket --object-lock-enabled-for-bucket)")
    return conf


def upload_bundle(bundle_path: str | Path, uri: str, *, client=None, retain_days: float | None = 3650,
                  retain_until: datetime | None = None, mode: str = "COMPLIANCE", actor: str | None = None,
                  context: dict[str, Any] | None = None, signing_key=None) -> dict[str, Any]:
    """Copy sealed bundle ``bundle_path`` to ``uri`` under Object Lock; return what was written.

    Retention: ``retain_until`` if given, else now + ``retain_days``. The local bundle must verify first
    (a broken bundle is never exported); its custody log gets an ``exported`` entry, signed with
    ``signing_key`` (default: this machine's evidence key) as every custody entry after sealing is."""
    from .bundle import Bundle

    bundle = Path(bundle_path)
    bucket, prefix = parse_s3_uri(uri)
    mode = mode.upper()
    if mode not in LOCK_MODES:
        raise BadInput("mode", f"'{mode}': expected COMPLIANCE or GOVERNANCE")
    if retain_until is None:
        if retain_days is None or float(retain_days) <= 0:
            raise BadInput("retain_days", "evidence needs a retention period of more than 0 days")
        retain_until = datetime.now(UTC) + timedelta(days=float(retain_days))
    elif retain_until.tzinfo is None:
        retain_until = retain_until.replace(tzinfo=UTC)
    if retain_until <= datetime.now(UTC):
        raise BadInput("retain_until", f"{retain_until.isoformat()} is in the past")
    res = verify_bundle(bundle, record=False, allow_unknown_key=True)  # integrity here; trust is the verifier's
    if not res.ok:
        raise IntegrityError(f"{bundle}: refusing to export a bundle that does not verify: "
                             + "; ".join(res.messages[:3]))
    client = client or s3_client()
    check_lock_enabled(client, bucket)
    import json

    manifest = json.loads((bundle / MANIFEST).read_bytes())
    digests = {f["path"]: f["sha256"] for f in manifest["files"]}
    items = [(rel, digests[rel]) for rel in sorted(digests)]
    items += [(name, _hex_of_file(bundle / name)) for name in (MANIFEST, SIGNATURE, PUBLIC_KEY)]
    written, skipped = [], []

    def put(rel: str, sha_hex: str) -> None:
        key = f"{prefix}/{rel}" if prefix else rel
        head = _head(client, bucket, key)
        if head is not None:
            if head.get("ChecksumSHA256") == _b64(sha_hex):
                skipped.append(rel)
                return
            if rel != CUSTODY:
                raise IntegrityError(f"s3://{bucket}/{key} already holds other bytes (checksum "
                                     f"{head.get('ChecksumSHA256')}, the bundle has {_b64(sha_hex)}); "
                                     "refusing to write a new version over sealed evidence")
        with open(bundle / rel, "rb") as fh:
            out = client.put_object(Bucket=bucket, Key=key, Body=fh, ChecksumAlgorithm="SHA256",
                                    ChecksumSHA256=_b64(sha_hex), ObjectLockMode=mode,
                                    ObjectLockRetainUntilDate=retain_until,
                                    Metadata={"aiir-sha256": sha_hex, "aiir-bundle-id": str(manifest["bundle_id"])})
        written.append({"path": rel, "version_id": out.get("VersionId"), "sha256": sha_hex})

    for rel, sha in items:
        put(rel, sha)
    b = Bundle(bundle, actor=actor, context=context, signing_key=signing_key)
    b.record("exported", destination=f"s3://{bucket}/{prefix}", object_lock_mode=mode,
             retain_until=retain_until.strftime("%Y-%m-%dT%H:%M:%SZ"), objects=len(items) + 1,
             manifest_sha256=_hex_of_file(bundle / MANIFEST))
    put(CUSTODY, _hex_of_file(bundle / CUSTODY))
    return {"uri": f"s3://{bucket}/{prefix}", "bucket": bucket, "prefix": prefix, "mode": mode,
            "retain_until": retain_until.strftime("%Y-%m-%dT%H:%M:%SZ"), "written": written,
            "already_there": skipped, "objects": len(items) + 1}


def _list_versions(client, bucket: str, prefix: str) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    kw: dict[str, Any] = {"Bucket": bucket, "Prefix": f"{prefix}/" if prefix else ""}
    while True:
        page = client.list_object_versions(**kw)
        for v in page.get("Versions", []):
            out.setdefault(v["Key"], []).append(v)
        for m in page.get("DeleteMarkers", []):
            out.setdefault(m["Key"], []).append({**m, "DeleteMarker": True})
        if not page.get("IsTruncated"):
            return out
        kw["KeyMarker"] = page.get("NextKeyMarker")
        kw["VersionIdMarker"] = page.get("NextVersionIdMarker")


def _download(client, bucket: str, key: str, dest: Path) -> None:
    obj = client.get_object(Bucket=bucket, Key=key)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fh:
        for chunk in iter(lambda: obj["Body"].read(1 << 20), b""):
            fh.write(chunk)


def verify_s3(uri: str, public_key=None, *, client=None, deep: bool = False, trusted_keys=(),
              trust_store: str | Path | None = None, allow_unknown_key: bool = False) -> VerifyResult:
    """Verify the bundle at ``uri`` where it is (see the module docstring). Never writes to the bucket. Key
    trust works as for local bundles (``trusted_keys``, ``trust_store``, ``allow_unknown_key``)."""
    import json

    from botocore.exceptions import ClientError

    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    base = f"{prefix}/" if prefix else ""
    try:
        versions = _list_versions(client, bucket, prefix)
    except ClientError as exc:
        code, msg = _client_error(exc)
        raise BadInput(uri, f"cannot list the bucket ({code}: {msg})") from None
    present = {k[len(base):]: v for k, v in versions.items() if not v[0].get("DeleteMarker")}
    if MANIFEST not in present and CUSTODY not in present:
        raise BadInput(uri, f"not an aiir evidence bundle (no {MANIFEST} or {CUSTODY} under it)")
    with tempfile.TemporaryDirectory(prefix="aiir-s3-verify-") as tmp:
        local = Path(tmp, "bundle")
        (local / PAYLOAD_DIR).mkdir(parents=True)
        for name in METADATA:
            if name in present:
                _download(client, bucket, base + name, local / name)
        res = verify_bundle(local, public_key, trusted_keys=trusted_keys, trust_store=trust_store,
                            allow_unknown_key=allow_unknown_key, record=False)
    # Files were not downloaded: drop what the empty files/ folder made verify_bundle say, check S3 instead.
    res.path = f"s3://{bucket}/{prefix}"
    res.messages = [m for m in res.messages if not m.startswith(("MISSING:", "INTACT:", "NOTE: verification"))]
    res.missing, res.changed, res.added = [], [], []
    res.files_checked = res.bytes_checked = 0
    manifest: dict[str, Any] = {}
    if MANIFEST in present:
        try:
            with tempfile.TemporaryDirectory() as tmp:
                _download(client, bucket, base + MANIFEST, Path(tmp, MANIFEST))
                manifest = json.loads(Path(tmp, MANIFEST).read_bytes())
        except (ValueError, OSError):
            manifest = {}
    expected = {f["path"]: f for f in manifest.get("files", []) if isinstance(f, dict) and "path" in f}
    now = datetime.now(UTC)
    msgs = res.messages
    for rel in sorted(set(present) - set(expected) - set(METADATA)):
        res.added.append(rel)
        msgs.append(f"ADDED: {rel} (not in the manifest)")
    for rel in sorted(set(expected) - set(present)):
        res.missing.append(rel)
        msgs.append(f"MISSING: {rel} (sha256 {expected[rel].get('sha256')})")
    for rel in sorted(set(expected) & set(present)):
        f, key = expected[rel], base + rel
        vs = present[rel]
        if len(vs) > 1:
            res.changed.append(rel)
            msgs.append(f"CHANGED: {rel} has {len(vs)} versions in S3: a later write shadows the sealed object "
                        f"(the locked original is version {vs[-1].get('VersionId')})")
            continue
        head = _head(client, bucket, key) or {}
        want_b64 = _b64(f["sha256"]) if isinstance(f.get("sha256"), str) and len(f["sha256"]) == 64 else None
        res.files_checked += 1
        res.bytes_checked += int(head.get("ContentLength") or 0)
        if head.get("ContentLength") != f.get("size"):
            res.changed.append(rel)
            msgs.append(f"CHANGED: {rel} has {head.get('ContentLength')} bytes in S3, the manifest says {f.get('size')}")
            continue
        if head.get("ChecksumSHA256") != want_b64:
            res.changed.append(rel)
            msgs.append(f"CHANGED: {rel} S3 checksum {head.get('ChecksumSHA256')}, the manifest says {want_b64}")
            continue
        if deep:
            h = hashlib.sha256()
            body = client.get_object(Bucket=bucket, Key=key)["Body"]
            while chunk := body.read(1 << 20):
                h.update(chunk)
            if h.hexdigest() != f["sha256"]:
                res.changed.append(rel)
                msgs.append(f"CHANGED: {rel} sha256 {h.hexdigest()}, the manifest says {f['sha256']}")
                continue
        _lock_note(head, rel, now, msgs)
    for name in (MANIFEST, SIGNATURE, PUBLIC_KEY):
        if name in present:
            if len(present[name]) > 1:
                res.changed.append(name)
                msgs.append(f"CHANGED: {name} has {len(present[name])} versions in S3")
            _lock_note(_head(client, bucket, base + name) or {}, name, now, msgs)
    res.changed.sort()
    trusted = getattr(res, "key_trusted", True) or allow_unknown_key  # the same trust rule as local bundles
    res.ok = bool(res.sealed and res.signature_ok and res.custody_ok and trusted
                  and not (res.changed or res.missing or res.added))
    if res.ok:
        by = getattr(res, "trusted_by", None)
        msgs.insert(0, f"INTACT: {res.files_checked} files, {res.bytes_checked} bytes in s3://{bucket}/{prefix} "
                       f"(SHA-256 checksums{' and re-read bytes' if deep else ''}); signature OK "
                       f"(key {res.public_key_sha256}{f', trusted: {by}' if by else ''}); custody chain OK "
                       f"({res.custody_entries} entries)")
    return res


def _lock_note(head: dict[str, Any], rel: str, now: datetime, msgs: list[str]) -> None:
    mode, until = head.get("ObjectLockMode"), head.get("ObjectLockRetainUntilDate")
    if mode is None or until is None:
        msgs.append(f"NOTE: {rel} is not under Object Lock retention")
    elif until.astimezone(UTC) <= now:
        msgs.append(f"NOTE: {rel} retention ({mode}) ended {until.isoformat()}")
    elif mode != "COMPLIANCE":
        msgs.append(f"NOTE: {rel} is locked in {mode} mode (a privileged user can lift it), not COMPLIANCE")


def download_bundle(uri: str, dest: str | Path, *, client=None) -> Path:
    """Copy the bundle at ``uri`` into the new folder ``dest`` (then ``aiir verify dest``)."""
    bucket, prefix = parse_s3_uri(uri)
    client = client or s3_client()
    dest = Path(dest)
    if dest.exists() and any(dest.iterdir()):
        raise BadInput(str(dest), "exists and is not empty")
    base = f"{prefix}/" if prefix else ""
    keys = [k for k, v in _list_versions(client, bucket, prefix).items() if not v[0].get("DeleteMarker")]
    if base + MANIFEST not in keys:
        raise BadInput(uri, f"not a sealed aiir evidence bundle (no {MANIFEST})")
    for key in sorted(keys):
        rel = key[len(base):]
        if not rel or rel.startswith("/") or ".." in rel.split("/"):
            raise BadInput(uri, f"unsafe object key {key!r}")
        _download(client, bucket, key, dest / rel)
    for p in sorted(dest.rglob("*"), reverse=True):
        if p.is_file():
            os.chmod(p, 0o444 if p.name != CUSTODY else 0o644)
    return dest
