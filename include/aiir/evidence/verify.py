"""Verify a bundle: every file against the signed manifest, the signature, and the custody chain.

``verify_bundle`` never trusts the bundle's own bookkeeping when it can check it:

* files: everything below ``files/`` is walked (links are not followed). A manifest path that is
  absent is *missing*; a path whose size or SHA-256 differs, or that is no longer a regular file, is
  *changed*; a path the manifest does not list (and any unexpected entry beside the metadata
  files) is *added*.
* signature: ``manifest.sig`` must verify over the exact bytes of ``manifest.json``, under the key the
  caller passes (``public_key``) or else under the bundle's own ``public_key.pem``; and that key must be
  **trusted**: the caller's key, or a fingerprint in the trust store (keys aiir issued, keys the operator
  added — :mod:`aiir.evidence.keys`), or one of ``trusted_keys``. A bundle signed by any other key fails
  (an attacker who rewrites everything can re-sign with their own key) unless ``allow_unknown_key=True``,
  which reduces the check to self-consistency and says so.
* custody: every link of ``custody.jsonl``; the manifest's ``custody_head`` must be the digest of the
  entry at that position (so no entry up to sealing changed); the ``added`` entries up to the head
  must list exactly the manifest's files; a ``sealed`` entry for this manifest must follow; every entry
  after the head must be signed by the bundle's key or a trusted one.

The verification is itself logged (``verified``) unless ``record=False`` or the log cannot be written.
"""

from __future__ import annotations

import base64
import fcntl
import os
import re
import socket
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aiir.errors import BadInput

from . import custody as _custody
from ._util import loads_strict, sha256_hex, utc_now
from .bundle import CUSTODY, MANIFEST, PAYLOAD_DIR, PUBLIC_KEY, SIGNATURE, STAGING_DIR, _actor, _walk_payload
from .copy import hash_file, read_regular
from .keys import (
    fingerprint,
    load_public_key,
    load_signing_key_if_present,
    public_key_pem,
    trust_store_path,
    trusted_fingerprints,
)

if TYPE_CHECKING:
    from collections.abc import Iterable

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass
class VerifyResult:
    path: str
    ok: bool = False
    sealed: bool = False
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    signature_ok: bool | None = None  # None: not sealed, nothing to check
    custody_ok: bool = False
    messages: list[str] = field(default_factory=list)
    key_source: str | None = None  # "caller" or "bundle"
    public_key_sha256: str | None = None
    key_trusted: bool | None = None  # None: no valid signature to judge
    trusted_by: str | None = None    # "--public-key", "trust store ...", "this machine's signing key ...", ...
    incident_id: str | None = None
    bundle_id: str | None = None
    sealed_at: str | None = None
    files_checked: int = 0
    bytes_checked: int = 0
    custody_entries: int = 0
    recorded: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_bundle(p: Path) -> bool:
    return p.is_dir() and ((p / MANIFEST).exists() or (p / CUSTODY).exists())


def verify_bundle(path: str | Path, public_key: Ed25519PublicKey | bytes | str | Path | None = None, *,
                  trusted_keys: Iterable[Ed25519PublicKey | bytes | str | Path] = (),
                  trust_store: str | Path | None = None, allow_unknown_key: bool = False,
                  record: bool = True, actor: str | None = None, host: str | None = None,
                  context: dict[str, Any] | None = None, workers: int | None = None,
                  fsync: bool = True, signing_key: Ed25519PrivateKey | None = None) -> VerifyResult:
    """Check bundle folder ``path``. Raises BadInput only if ``path`` is not a bundle folder, or a given
    key or the trust store cannot be read; every finding about the bundle itself goes into the result.

    ``public_key``: the key the bundle must be signed with (trusted by definition). Otherwise the
    bundle's own key must be in the trust store (``trust_store``, default
    :func:`~aiir.evidence.keys.trust_store_path`), be this machine's signing key, or be one of
    ``trusted_keys`` (keys, PEM files or fingerprints); ``allow_unknown_key`` accepts any key.
    ``signing_key`` signs the ``verified`` custody entry (default: this machine's key, if any)."""
    bundle = Path(path)
    if not bundle.is_dir():
        raise BadInput(str(bundle), "not a folder (expected an evidence bundle folder)")
    if not _is_bundle(bundle):
        raise BadInput(str(bundle), f"not an aiir evidence bundle (no {MANIFEST} or {CUSTODY})")
    trusted = load_public_key(public_key) if public_key is not None else None
    trust = trusted_fingerprints(trusted_keys, trust_store=trust_store)
    if trusted is not None:
        trust[fingerprint(trusted)] = "--public-key"

    res = VerifyResult(path=str(bundle))
    msgs = res.messages
    chain = _custody.read_chain(bundle / CUSTODY)
    entries = chain.entries
    res.custody_entries = len(entries)
    custody_problems = list(chain.problems)
    if not (bundle / CUSTODY).exists():
        custody_problems.append(f"{CUSTODY} is missing")
    opened = entries[0] if entries and entries[0].get("action") == "opened" else None
    if entries and opened is None:
        custody_problems.append(f"{CUSTODY}: first entry is not 'opened'")

    # ---------------------------------------------------------------- manifest + signature
    manifest: dict[str, Any] | None = None
    manifest_bytes = b""
    expected: dict[str, tuple[str, int]] = {}
    res.sealed = (bundle / MANIFEST).exists()
    if res.sealed:
        try:
            manifest_bytes = read_regular(bundle / MANIFEST)
            manifest = loads_strict(manifest_bytes, MANIFEST)
            if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), list):
                raise BadInput(MANIFEST, "no 'files' list")
        except BadInput as exc:
            msgs.append(f"SIGNATURE: {exc} — the manifest was altered")
            manifest = None
        res.signature_ok = _check_signature(bundle, manifest_bytes, manifest, trusted, res)
        if res.signature_ok:
            _judge_trust(res, trust, allow_unknown_key, trust_store)
        if manifest is not None:
            res.incident_id = manifest.get("incident_id")
            res.bundle_id = manifest.get("bundle_id")
            res.sealed_at = manifest.get("sealed_at")
            for f in manifest["files"]:
                ok_entry = (isinstance(f, dict) and isinstance(f.get("path"), str)
                            and f["path"].startswith(PAYLOAD_DIR + "/") and isinstance(f.get("sha256"), str)
                            and _HEX64.match(f["sha256"]) and isinstance(f.get("size"), int))
                if not ok_entry:
                    msgs.append(f"SIGNATURE: malformed manifest file entry {f!r}")
                    res.signature_ok = False
                    continue
                expected[f["path"]] = (f["sha256"], f["size"])
    else:
        msgs.append(f"NOT SEALED: no {MANIFEST}; files are checked against the custody log only")
    if manifest is None:  # unsealed or unreadable manifest: fall back to what custody recorded
        for e in entries:
            if e.get("action") == "added" and isinstance(e.get("file"), str):
                expected[e["file"]] = (e.get("sha256", ""), e.get("size", -1))
        if opened:
            res.incident_id = res.incident_id or opened.get("incident_id")
            res.bundle_id = res.bundle_id or opened.get("bundle_id")

    # ---------------------------------------------------------------- custody vs manifest
    if manifest is not None:
        custody_problems += _check_custody_against_manifest(entries, manifest, manifest_bytes, opened)
        custody_problems += _check_post_seal_signatures(entries, manifest, trust, allow_unknown_key, msgs)
    res.custody_ok = not custody_problems
    msgs += [f"CUSTODY: {p}" for p in custody_problems]

    # ---------------------------------------------------------------- files
    allowed_root = {MANIFEST, SIGNATURE, PUBLIC_KEY, CUSTODY, PAYLOAD_DIR}
    if not res.sealed:
        allowed_root.add(STAGING_DIR)
    for name in sorted(os.listdir(bundle)):
        if name not in allowed_root:
            res.added.append(name)
            msgs.append(f"ADDED: {name} (not part of a bundle)")
    payload = bundle / PAYLOAD_DIR
    if payload.is_symlink() or (payload.exists() and not payload.is_dir()):
        res.changed.append(PAYLOAD_DIR)
        msgs.append(f"CHANGED: {PAYLOAD_DIR} is not a folder")
        on_disk: dict[str, os.stat_result] = {}
    else:
        on_disk = dict(_walk_payload(bundle))
    to_hash: list[str] = []
    for rel in sorted(set(on_disk) | set(expected)):
        st = on_disk.get(rel)
        if rel not in expected:
            res.added.append(rel)
            msgs.append(f"ADDED: {rel} (not in the manifest)")
        elif st is None:
            res.missing.append(rel)
            msgs.append(f"MISSING: {rel} (sha256 {expected[rel][0]})")
        elif not stat.S_ISREG(st.st_mode):
            res.changed.append(rel)
            msgs.append(f"CHANGED: {rel} is no longer a regular file")
        elif st.st_size != expected[rel][1]:
            res.changed.append(rel)
            msgs.append(f"CHANGED: {rel} has {st.st_size} bytes, the manifest says {expected[rel][1]}")
        else:
            to_hash.append(rel)
            if st.st_mode & 0o277:
                msgs.append(f"NOTE: {rel} is writable or readable by others (mode {stat.S_IMODE(st.st_mode):04o}); "
                            "evidence files are 0400")

    def digest(rel: str) -> tuple[str, str | None, int]:
        try:
            sha, size = hash_file(bundle / rel, follow_symlinks=False)
        except BadInput as exc:
            return rel, f"unreadable: {exc.problem}", 0
        return rel, sha, size

    with ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1)) as pool:
        for rel, sha, size in pool.map(digest, to_hash):
            res.files_checked += 1
            res.bytes_checked += size
            if sha != expected[rel][0]:
                res.changed.append(rel)
                msgs.append(f"CHANGED: {rel} sha256 {sha}, the manifest says {expected[rel][0]}")
    res.changed.sort()
    res.added.sort()

    res.ok = bool(res.sealed and res.signature_ok and res.custody_ok
                  and (res.key_trusted or allow_unknown_key)
                  and not (res.changed or res.missing or res.added))
    if res.ok:
        trust_note = (f"trusted: {res.trusted_by}" if res.key_trusted
                      else "NOT a trusted key: accepted with --allow-unknown-key, self-consistency only")
        msgs.insert(0, f"INTACT: {res.files_checked} files, {res.bytes_checked} bytes; signature OK "
                       f"(key {res.public_key_sha256}, from the {res.key_source}; {trust_note}); custody chain OK "
                       f"({res.custody_entries} entries)")
    if record:
        _record(bundle, res, actor=actor, host=host, context=context, fsync=fsync, signing_key=signing_key)
    return res


def _judge_trust(res: VerifyResult, trust: dict[str, str], allow_unknown: bool,
                 trust_store: str | Path | None) -> None:
    fp = res.public_key_sha256
    if fp in trust:
        res.key_trusted, res.trusted_by = True, trust[fp]
        return
    res.key_trusted = False
    where = trust_store or trust_store_path()
    if allow_unknown:
        res.messages.append(f"NOTE: signed by key {fp}, which is not trusted here (not in {where}); accepted "
                            "because of --allow-unknown-key: this only shows the bundle is self-consistent")
    else:
        res.messages.append(f"UNTRUSTED KEY: the bundle is signed by key {fp}, which is not in the trust store "
                            f"({where}) nor this machine's signing key: anyone can re-sign a rewritten bundle "
                            "with a key of their own. Verify with --trusted-key/--public-key PEM (the signer's "
                            "public key, obtained out of band), or --allow-unknown-key to check self-consistency only")


def _check_post_seal_signatures(entries: list[dict[str, Any]], manifest: dict[str, Any], trust: dict[str, str],
                                allow_unknown: bool, msgs: list[str]) -> list[str]:
    """Every entry after the signed custody head must carry a valid signature by the bundle's key or a
    trusted one (so the 'sealed' entry and later ones cannot be edited, inserted or dropped unseen)."""
    head = manifest.get("custody_head")
    head = head.get("seq") if isinstance(head, dict) else None
    if not isinstance(head, int) or isinstance(head, bool) or head < 0:
        return []  # reported by _check_custody_against_manifest
    problems: list[str] = []
    unknown: set[str] = set()
    own = manifest.get("public_key_sha256")
    for e in entries[head + 1:]:
        fp, problem = _custody.check_entry_signature(e)
        if problem:
            problems.append(f"entry {e.get('seq')} ('{e.get('action')}', after sealing): {problem}")
        elif fp != own and fp not in trust:
            if allow_unknown:
                unknown.add(fp)
            else:
                problems.append(f"entry {e.get('seq')} ('{e.get('action')}', after sealing) is signed by key {fp}, "
                                "which is neither the bundle's nor a trusted key")
    if unknown:
        msgs.append(f"NOTE: custody entries after sealing signed by untrusted key(s) {sorted(unknown)}, accepted "
                    "because of --allow-unknown-key")
    return problems


def _check_signature(bundle: Path, data: bytes, manifest: dict[str, Any] | None,
                     trusted: Ed25519PublicKey | None, res: VerifyResult) -> bool:
    from cryptography.exceptions import InvalidSignature

    msgs = res.messages
    named = manifest.get("public_key_sha256") if manifest else None
    if trusted is not None:
        pub, res.key_source = trusted, "caller"
    else:
        res.key_source = "bundle"
        try:
            pub = load_public_key(read_regular(bundle / PUBLIC_KEY))
        except (OSError, BadInput) as exc:
            msgs.append(f"SIGNATURE: cannot load {PUBLIC_KEY}: {exc}")
            return False
    res.public_key_sha256 = fingerprint(pub)
    try:
        sig = read_regular(bundle / SIGNATURE)
    except BadInput as exc:
        msgs.append(f"SIGNATURE: cannot read {SIGNATURE}: {exc.problem}")
        return False
    try:
        pub.verify(sig, data)
    except InvalidSignature:
        who = "the given public key" if trusted is not None else f"the bundle's {PUBLIC_KEY}"
        msgs.append(f"SIGNATURE: {SIGNATURE} does not verify over {MANIFEST} under {who} "
                    f"({res.public_key_sha256}; the manifest names {named})")
        return False
    if named != res.public_key_sha256:
        msgs.append(f"SIGNATURE: the manifest names key {named} but was signed by {res.public_key_sha256}")
        return False
    # the bundle's copy of the key must be exactly the signer's key as aiir writes it (a PEM parser
    # ignores text around the block, so an edited file could still load)
    try:
        stored = read_regular(bundle / PUBLIC_KEY)
    except BadInput:
        stored = None
    if stored is not None and stored != public_key_pem(pub):
        res.changed.append(PUBLIC_KEY)
        msgs.append(f"CHANGED: {PUBLIC_KEY} is not the signer's key as sealed (bytes added or edited)")
    elif stored is None and trusted is not None:
        res.missing.append(PUBLIC_KEY)
        msgs.append(f"MISSING: {PUBLIC_KEY}")
    return True


def _check_custody_against_manifest(entries: list[dict[str, Any]], manifest: dict[str, Any],
                                    manifest_bytes: bytes, opened: dict[str, Any] | None) -> list[str]:
    problems: list[str] = []
    head = manifest.get("custody_head")
    if not isinstance(head, dict):
        return [f"the manifest's custody_head is not an object ({type(head).__name__})"]
    seq, digest = head.get("seq"), head.get("sha256")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 0 or seq >= len(entries):
        return [f"the manifest's custody head (entry {seq}) is not in {CUSTODY} (log truncated or replaced)"]
    if _custody.entry_hash(entries[seq]) != digest:
        problems.append(f"entry {seq} is not the one the manifest was sealed on: "
                        "custody entries up to sealing were changed")
    if opened and opened.get("bundle_id") != manifest.get("bundle_id"):
        problems.append("the 'opened' entry names another bundle id than the manifest")
    recorded: dict[str, tuple[Any, Any]] = {}
    for e in entries[: seq + 1]:
        if e.get("action") == "added":
            recorded[repr(e.get("file"))] = (repr(e.get("sha256")), repr(e.get("size")))
    listed = {repr(f.get("path")): (repr(f.get("sha256")), repr(f.get("size")))
              for f in manifest["files"] if isinstance(f, dict)}
    if recorded != listed:  # (repr: a tampered entry may hold any JSON, hashable or not)
        diff = sorted(set(recorded.items()) ^ set(listed.items()), key=str)[:5]
        problems.append(f"the 'added' entries up to sealing do not match the manifest's files (e.g. {diff})")
    manifest_sha = sha256_hex(manifest_bytes)
    later = entries[seq + 1:]
    if not any(e.get("action") == "sealed" and e.get("manifest_sha256") == manifest_sha for e in later):
        problems.append("no 'sealed' entry for this manifest after the custody head (log truncated?)")
    for e in later:
        if e.get("action") in ("added", "opened"):
            problems.append(f"entry {e.get('seq')}: '{e.get('action')}' after sealing")
    return problems


def _record(bundle: Path, res: VerifyResult, *, actor: str | None, host: str | None,
            context: dict[str, Any] | None, fsync: bool, signing_key: Ed25519PrivateKey | None = None) -> None:
    sign = None
    if (bundle / MANIFEST).exists():  # after sealing, custody entries are signed
        key = signing_key or load_signing_key_if_present()
        if key is None:
            res.messages.append("NOTE: verification not logged: entries after sealing must be signed and there "
                                "is no signing key on this machine (that is fine for a verifier)")
            return
        sign = _custody.signer(key)
    try:
        fd = os.open(bundle, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        res.messages.append(f"NOTE: verification not logged: {exc.strerror}")
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        chain = _custody.read_chain(bundle / CUSTODY, keep=False)
        if not (bundle / CUSTODY).exists() or any("incomplete last line" in p for p in chain.problems):
            res.messages.append("NOTE: verification not logged: the custody log is missing or ends mid-line")
            return
        entry = {"at": utc_now(), "action": "verified", "actor": _actor(actor), "host": host or socket.gethostname(),
                 "pid": os.getpid(), "context": dict(context or {}),
                 "outcome": "intact" if res.ok else "failed",
                 "changed": len(res.changed), "missing": len(res.missing), "added": len(res.added),
                 "signature_ok": res.signature_ok, "custody_ok": res.custody_ok,
                 "key_source": res.key_source, "public_key_sha256": res.public_key_sha256,
                 "key_trusted": res.key_trusted, "files_checked": res.files_checked}
        _custody.append_entry(bundle / CUSTODY, chain, entry, fsync=fsync, sign=sign)
        res.recorded = True
    except OSError as exc:
        res.messages.append(f"NOTE: verification not logged ({exc.strerror}); read-only copy?")
    finally:
        os.close(fd)


def signature_b64(bundle: str | Path) -> str:
    """The signature as base64 text (for tickets and chat, where the raw 64 bytes do not travel)."""
    return base64.b64encode(Path(bundle, SIGNATURE).read_bytes()).decode()
