"""Sign and verify registered artifacts with the OpenSSF model signing format (``model-signing``).

Every registered model version (its MLflow artifact folder) and every training dataset (a file) gets

* ``<artifact>.sig`` — a Sigstore bundle made by ``model_signing``: a DSSE envelope over an in-toto
  statement whose predicate lists every file with its SHA-256, signed with ECDSA;
* ``<artifact>.manifest.json`` — the same file list, readable, plus who signed what and when.

Both sit beside the artifact (never inside it: the folder's own digest stays what it was). A dataset
whose ``.sig`` already covers its current bytes is not signed again; one whose bytes changed keeps the
old signature and gets ``<name>.<sha12>.sig`` for the new content.

Two ways to sign (:class:`SignerSpec`):

* **key** (default, offline): aiir's ECDSA P-256 key ``$AIIR_HOME/keys/artifact_ecdsa_p256.pem``,
  created on first use (``AIIR_ARTIFACT_KEY`` names another; in Airflow the PEM comes from the
  connection ``aiir_artifact_signing``);
* **certificate** (a user's PKI): ``AIIR_ARTIFACT_CERT`` (signing certificate, key usage
  digitalSignature or EKU codeSigning) with its key in ``AIIR_ARTIFACT_KEY`` and the chain in
  ``AIIR_ARTIFACT_CERT_CHAIN``; verification then needs the trust anchors (``AIIR_ARTIFACT_TRUST_CHAIN``
  or ``--cert-chain``).

Verification (:func:`verify_artifact`) says which files changed, went missing or were added, whether the
signature holds and under which key, and whether the signature file is the one recorded at registration.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiir import config
from aiir.errors import BadInput
from aiir.hashing import VOLATILE_NAMES, sha256_bytes, sha256_file

SIG_SUFFIX = ".sig"
MANIFEST_SUFFIX = ".manifest.json"
MANIFEST_FORMAT = "aiir-artifact-manifest/1"
GIT_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
CONN_ID = "aiir_artifact_signing"


# ================================================================================= keys
# The OpenSSF model signing format signs with ECDSA on the NIST curves only (not Ed25519, the evidence
# key), so registered artifacts get their own key. PEM parsing reuses aiir.evidence.keys (one-line PEM
# with literal \n from an Airflow connection is accepted); creation and file checks mirror it.

ARTIFACT_KEY_FILENAME = "artifact_ecdsa_p256.pem"


def default_artifact_key_path() -> Path:
    return config.paths().home / "keys" / ARTIFACT_KEY_FILENAME


def load_ec_private_key_pem(data: bytes | str, password: bytes | str | None = None):
    """An ECDSA (P-256/P-384/P-521) private key from PEM text (optionally encrypted with ``password``)."""
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    from aiir.evidence.keys import _as_pem_bytes

    if isinstance(password, str):
        password = password.encode()
    try:
        key = serialization.load_pem_private_key(_as_pem_bytes(data), password=password)
    except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
        raise BadInput("artifact signing key", f"not a readable PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name not in ("secp256r1", "secp384r1",
                                                                                  "secp521r1"):
        raise BadInput("artifact signing key", "expected an ECDSA key on P-256, P-384 or P-521 (what the "
                       f"OpenSSF model signing format supports), got {type(key).__name__}")
    return key


def _read_key_file(path: Path) -> bytes:
    from aiir.evidence.keys import read_private_key_file

    return read_private_key_file(path)


def load_or_create_artifact_key(path: str | Path | None = None):
    """The artifact signing key at ``path`` (default ``$AIIR_HOME/keys/artifact_ecdsa_p256.pem``), ECDSA
    P-256, created on first use: 0600 in a 0700 folder, written to a temporary file and hard-linked into
    place, so two processes starting together end up with one key."""
    from cryptography.hazmat.primitives.asymmetric import ec

    path = Path(path) if path else default_artifact_key_path()
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".new-key-")
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, _pkcs8(ec.generate_private_key(ec.SECP256R1())))
            os.fsync(fd)
            os.close(fd)
            fd = -1
            try:
                os.link(tmp, path)
            except FileExistsError:
                pass  # another process won the race: use its key
        finally:
            if fd >= 0:
                os.close(fd)
            os.unlink(tmp)
    return load_ec_private_key_pem(_read_key_file(path))


# ================================================================================= signer / trust

@dataclass
class SignerSpec:
    """How to sign. ``key_pem`` (text from a secret store) wins over ``key_path``."""

    method: str = "key"  # "key" | "certificate"
    key_path: Path | None = None
    key_pem: bytes | None = None
    password: str | None = None
    certificate: Path | None = None
    chain: list[Path] = field(default_factory=list)

    @classmethod
    def from_env(cls) -> SignerSpec:
        key = os.environ.get("AIIR_ARTIFACT_KEY")
        cert = os.environ.get("AIIR_ARTIFACT_CERT")
        chain = [Path(p) for p in os.environ.get("AIIR_ARTIFACT_CERT_CHAIN", "").split(os.pathsep) if p]
        if cert and not key:
            raise BadInput("AIIR_ARTIFACT_CERT", "certificate-based signing needs its private key in AIIR_ARTIFACT_KEY")
        return cls(method="certificate" if cert else "key", key_path=Path(key) if key else None,
                   password=os.environ.get("AIIR_ARTIFACT_KEY_PASSWORD") or None,
                   certificate=Path(cert) if cert else None, chain=chain)

    def private_key(self):
        if self.key_pem is not None:
            return load_ec_private_key_pem(self.key_pem, self.password)
        if self.key_path is None:
            return load_or_create_artifact_key()
        if not self.key_path.exists():
            raise BadInput(str(self.key_path), "artifact signing key not found")
        return load_ec_private_key_pem(_read_key_file(self.key_path), self.password)


def public_pem(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    pub = key.public_key() if hasattr(key, "private_bytes") else key
    return pub.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def key_id(key) -> str:
    """How model-signing names a key in a bundle: SHA-256 (hex) of its SubjectPublicKeyInfo PEM."""
    return sha256_bytes(public_pem(key))


def load_ec_public_key(source: bytes | str | Path):
    """An ECDSA public key from PEM (bytes/text) or a PEM file (a private key or certificate PEM gives
    its public half)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    where = "trusted key"
    if isinstance(source, Path) or (isinstance(source, str) and "-----BEGIN" not in source):
        where = str(source)
        try:
            source = Path(source).read_bytes()
        except OSError as exc:
            raise BadInput(where, f"cannot read key: {exc.strerror}") from None
    pem = source.encode() if isinstance(source, str) else bytes(source)
    try:
        if b"CERTIFICATE" in pem:
            key = x509.load_pem_x509_certificate(pem).public_key()
        elif b"PRIVATE KEY" in pem:
            key = serialization.load_pem_private_key(pem, password=None).public_key()
        else:
            key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise BadInput(where, f"not a readable PEM key or certificate: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise BadInput(where, f"expected an ECDSA public key (P-256/384/521), got {type(key).__name__}")
    return key


def default_trusted_keys() -> list[Any]:
    """aiir's own artifact key (if it exists; never created here) and ``AIIR_ARTIFACT_TRUSTED_KEYS``."""
    out = []
    own = Path(os.environ["AIIR_ARTIFACT_KEY"]) if os.environ.get("AIIR_ARTIFACT_KEY") else default_artifact_key_path()
    if own.is_file():
        try:
            out.append(load_ec_private_key_pem(own.read_bytes(), os.environ.get("AIIR_ARTIFACT_KEY_PASSWORD")
                                               or None).public_key())
        except (BadInput, OSError):
            pass
    for p in os.environ.get("AIIR_ARTIFACT_TRUSTED_KEYS", "").split(os.pathsep):
        if p:
            out.append(load_ec_public_key(Path(p)))
    return out


def default_trust_chain() -> list[Path]:
    raw = os.environ.get("AIIR_ARTIFACT_TRUST_CHAIN") or os.environ.get("AIIR_ARTIFACT_CERT_CHAIN") or ""
    return [Path(p) for p in raw.split(os.pathsep) if p]


# ================================================================================= paths

def signature_path(artifact: Path) -> Path:
    artifact = Path(artifact)
    return artifact.with_name(artifact.name + SIG_SUFFIX)


def manifest_path_for(sig: Path) -> Path:
    sig = Path(sig)
    return sig.with_name(sig.name[: -len(SIG_SUFFIX)] + MANIFEST_SUFFIX)


def _hashing_config(kind: str):
    from model_signing import hashing

    ignore = sorted(VOLATILE_NAMES) if kind == "model" else []
    return hashing.Config().set_ignored_paths(paths=ignore)


# ================================================================================= reading bundles

def read_bundle(sig: Path) -> dict[str, Any]:
    """What a signature file claims (not yet verified): statement, resources, key id or certificate."""
    try:
        raw = Path(sig).read_bytes()
        bundle = json.loads(raw)
        env = bundle["dsseEnvelope"]
        statement = json.loads(base64.b64decode(env["payload"]))
        pred = statement["predicate"]
        resources = {r["name"]: r["digest"] for r in pred["resources"]}
    except FileNotFoundError:
        raise BadInput(str(sig), "signature file not found") from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise BadInput(str(sig), f"not a model-signing signature bundle ({type(exc).__name__}: {exc})") from None
    vm = bundle.get("verificationMaterial") or {}
    chain = (vm.get("x509CertificateChain") or {}).get("certificates") or []
    out = {"sha256": sha256_bytes(raw), "statement": statement, "resources": resources,
           "serialization": pred.get("serialization", {}),
           "subject_sha256": ((statement.get("subject") or [{}])[0].get("digest") or {}).get("sha256"),
           "subject_name": (statement.get("subject") or [{}])[0].get("name"),
           "method": "certificate" if chain else "key",
           "key_id": (vm.get("publicKey") or {}).get("hint")}
    if chain:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes

        cert = x509.load_der_x509_certificate(base64.b64decode(chain[0]["rawBytes"]))
        out["certificate"] = {"subject": cert.subject.rfc4514_string(), "issuer": cert.issuer.rfc4514_string(),
                              "serial": format(cert.serial_number, "x"),
                              "sha256": cert.fingerprint(hashes.SHA256()).hex(),
                              "not_after": cert.not_valid_after_utc.isoformat()}
        out["key_id"] = key_id(cert.public_key())
    return out


# ================================================================================= signing

def _tmp_pem(d: str, name: str, data: bytes) -> Path:
    p = Path(d) / name
    fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return p


def _pkcs8(key) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _now() -> str:
    from aiir.registry import now_iso

    return now_iso()


def sign_artifact(path: str | Path, *, kind: str, name: str, spec: SignerSpec | None = None,
                  sig_path: Path | None = None, actor: str | None = None,
                  reuse: bool = True) -> dict[str, Any]:
    """Sign ``path`` (a model folder or a dataset file): write ``.sig`` and ``.manifest.json`` beside it.

    ``reuse``: a signature already beside it that verifies under the same key is kept (datasets shared by
    several versions are signed once). Returns what to record on the MLflow version."""
    from model_signing import signing

    if kind not in ("model", "dataset"):
        raise BadInput("kind", f"expected 'model' or 'dataset', got {kind!r}")
    path = Path(path).resolve()
    if kind == "model" and not path.is_dir():
        raise BadInput(str(path), "model artifact to sign must be a folder")
    if kind == "dataset" and not path.is_file():
        raise BadInput(str(path), "dataset to sign must be a file")
    spec = spec or SignerSpec.from_env()
    key = spec.private_key()
    kid = key_id(key)
    t0 = time.perf_counter()
    sig = Path(sig_path) if sig_path else signature_path(path)
    if reuse and sig.exists():
        res = verify_artifact(path, sig, kind=kind, trusted_keys=[key.public_key()],
                              trust_chain=spec.chain or None)
        if res.ok:
            return _record(path, sig, kind, reused=True, seconds=time.perf_counter() - t0)
        if kind == "dataset":  # another content under this name: keep the old signature, add one for these bytes
            sig = path.with_name(f"{path.name}.{sha256_file(path)[:12]}{SIG_SUFFIX}")
            if sig.exists():
                res = verify_artifact(path, sig, kind=kind, trusted_keys=[key.public_key()],
                                      trust_chain=spec.chain or None)
                if res.ok:
                    return _record(path, sig, kind, reused=True, seconds=time.perf_counter() - t0)
    cfg = signing.Config().set_hashing_config(_hashing_config(kind))
    tmp_sig = sig.with_name(f".{sig.name}.{os.getpid()}.tmp")
    with tempfile.TemporaryDirectory(prefix="aiir-sign-") as d:
        os.chmod(d, 0o700)
        kp = _tmp_pem(d, "key.pem", _pkcs8(key))
        if spec.method == "certificate":
            if spec.certificate is None:
                raise BadInput("certificate", "certificate-based signing needs the signing certificate")
            cfg.use_certificate_signer(private_key=kp, signing_certificate=spec.certificate,
                                       certificate_chain=spec.chain)
        else:
            cfg.use_elliptic_key_signer(private_key=kp)
        try:
            cfg.sign(path, tmp_sig)
        except ValueError as exc:
            tmp_sig.unlink(missing_ok=True)
            raise BadInput(str(spec.certificate or spec.key_path or "signing key"), str(exc)) from None
    claims = read_bundle(tmp_sig)
    manifest = {
        "format": MANIFEST_FORMAT, "kind": kind, "name": name, "path": str(path),
        "signature_file": sig.name, "signature_sha256": claims["sha256"], "signed_at": _now(),
        "signed_by": actor or os.environ.get("AIIR_ACTOR") or _login(), "method": spec.method,
        "key_id": kid, "certificate": claims.get("certificate"),
        "subject": {"name": claims["subject_name"], "sha256": claims["subject_sha256"]},
        "hash_algorithm": claims["serialization"].get("hash_type", "sha256"),
        "ignore_paths": claims["serialization"].get("ignore_paths", []),
        "files": [{"name": n, "sha256": d} for n, d in sorted(claims["resources"].items())],
        "tool": {"name": "model-signing", "version": _ms_version()},
    }
    mp = manifest_path_for(sig)
    mtmp = mp.with_name(f".{mp.name}.{os.getpid()}.tmp")
    mtmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp_sig, sig)
    os.replace(mtmp, mp)
    return _record(path, sig, kind, reused=False, seconds=time.perf_counter() - t0)


def _record(path: Path, sig: Path, kind: str, *, reused: bool, seconds: float) -> dict[str, Any]:
    c = read_bundle(sig)
    return {"kind": kind, "path": str(path), "signature": str(sig), "signature_sha256": c["sha256"],
            "manifest": str(manifest_path_for(sig)), "subject_sha256": c["subject_sha256"],
            "method": c["method"], "key_id": c["key_id"], "files": len(c["resources"]),
            "reused": reused, "seconds": round(seconds, 4)}


def _login() -> str:
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def _ms_version() -> str:
    from importlib.metadata import version

    try:
        return version("model-signing")
    except Exception:  # noqa: BLE001
        return "unknown"


# ================================================================================= verification

@dataclass
class ArtifactCheck:
    """The verdict on one artifact against its signature."""

    path: str
    kind: str
    signature: str
    ok: bool = False
    signature_ok: bool | None = None  # None: could not be checked (no trust anchor)
    content_ok: bool | None = None
    signature_file_ok: bool | None = None  # the .sig is the one recorded at registration (None: nothing recorded)
    manifest_ok: bool | None = None  # the readable manifest matches the signed statement
    method: str | None = None
    key_id: str | None = None
    certificate: dict[str, Any] | None = None
    subject_sha256: str | None = None
    changed: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    added: list[str] = field(default_factory=list)
    messages: list[str] = field(default_factory=list)
    files_checked: int = 0
    bytes_checked: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def status(self) -> str:
        if self.ok:
            return "verified"
        if not Path(self.signature).exists():
            return "unsigned"
        if self.signature_ok is False:
            return "bad-signature"
        if self.content_ok is False:
            return "tampered"
        return "unverified"


def _walk(path: Path, ignore: set[str]) -> dict[str, Path]:
    if path.is_file():  # a single-file artifact is one resource named "."
        return {".": path}
    out: dict[str, Path] = {}
    for p in sorted(path.rglob("*")):
        rel = p.relative_to(path).as_posix()
        if any(rel == i or rel.startswith(i.rstrip("/") + "/") for i in ignore):
            continue
        if p.is_file() or p.is_symlink():
            out[rel] = p
    return out


def _content_diff(path: Path, claims: dict[str, Any], res: ArtifactCheck) -> None:
    """Name every changed, missing and added file against the statement's resources (hex digests)."""
    ignore = set(claims["serialization"].get("ignore_paths", [])) | set(GIT_PATHS)
    on_disk = _walk(path, ignore)
    expected = claims["resources"]
    single = path.is_file()
    for rel in sorted(set(on_disk) | set(expected)):
        name = path.name if single and rel == "." else rel
        if single and rel == "." and rel in expected:
            actual = sha256_file(path)
            if actual != expected[rel]:
                res.changed.append(name)
                res.messages.append(f"CHANGED: {name} sha256 {actual}, signed {expected[rel]}")
            continue
        if rel not in expected:
            res.added.append(rel)
            res.messages.append(f"ADDED: {rel} (not in the signed manifest)")
        elif rel not in on_disk:
            res.missing.append(rel)
            res.messages.append(f"MISSING: {rel} (signed sha256 {expected[rel]})")
        else:
            p = on_disk[rel]
            if p.is_symlink():
                res.changed.append(rel)
                res.messages.append(f"CHANGED: {rel} is now a symbolic link")
                continue
            actual = sha256_file(p)
            if actual != expected[rel]:
                res.changed.append(rel)
                res.messages.append(f"CHANGED: {rel} sha256 {actual}, signed {expected[rel]}")


def verify_artifact(path: str | Path, sig: str | Path | None = None, *, kind: str | None = None,
                    expected_signature_sha256: str | None = None, trusted_keys: list[Any] | None = None,
                    trust_chain: list[Path] | None = None) -> ArtifactCheck:
    """Check ``path`` against its model-signing signature (default: ``<path>.sig``).

    ``trusted_keys``: public keys a key-signed artifact may be signed by (default: aiir's own artifact key
    and ``AIIR_ARTIFACT_TRUSTED_KEYS``); ``trust_chain``: CA certificates for certificate-signed ones
    (default ``AIIR_ARTIFACT_TRUST_CHAIN``). ``expected_signature_sha256``: the signature file's digest
    recorded at registration (a swapped ``.sig`` fails even if it is validly signed)."""
    from model_signing import verifying

    t0 = time.perf_counter()
    path = Path(path)
    sig = Path(sig) if sig else signature_path(path)
    kind = kind or ("model" if path.is_dir() else "dataset")
    res = ArtifactCheck(path=str(path), kind=kind, signature=str(sig))
    msgs = res.messages
    if not path.exists():
        res.missing.append(path.name)
        msgs.append(f"MISSING: {path} (the {kind} itself)")
        res.content_ok = False
    if not sig.exists():
        msgs.append(f"UNSIGNED: no signature at {sig}")
        res.signature_ok = False
        res.seconds = time.perf_counter() - t0
        return res
    try:
        claims = read_bundle(sig)
    except BadInput as exc:
        msgs.append(f"SIGNATURE: {exc}")
        res.signature_ok = False
        res.seconds = time.perf_counter() - t0
        return res
    res.method, res.key_id, res.certificate = claims["method"], claims["key_id"], claims.get("certificate")
    res.subject_sha256 = claims["subject_sha256"]
    if expected_signature_sha256 is not None:
        res.signature_file_ok = claims["sha256"] == expected_signature_sha256
        if not res.signature_file_ok:
            msgs.append(f"SIGNATURE FILE REPLACED: {sig.name} has sha256 {claims['sha256']}, the registry "
                        f"recorded {expected_signature_sha256}")
    mp = manifest_path_for(sig)
    if mp.exists():
        try:
            m = json.loads(mp.read_text(encoding="utf-8"))
            listed = {f["name"]: f["sha256"] for f in m.get("files", [])}
            res.manifest_ok = listed == claims["resources"] and m.get("signature_sha256") == claims["sha256"]
        except (ValueError, KeyError, TypeError, OSError):
            res.manifest_ok = False
        if not res.manifest_ok:
            msgs.append(f"MANIFEST: {mp.name} does not match the signed statement in {sig.name} (swapped or edited)")

    cfg = verifying.Config()
    anchor_ok = True
    with tempfile.TemporaryDirectory(prefix="aiir-verify-") as d:
        if claims["method"] == "certificate":
            chain = trust_chain if trust_chain is not None else default_trust_chain()
            if not chain:
                msgs.append("SIGNATURE: certificate-signed; no trust anchors given (--cert-chain or "
                            "AIIR_ARTIFACT_TRUST_CHAIN)")
                anchor_ok = False
            else:
                cfg.use_certificate_verifier(certificate_chain=chain)
        else:
            keys = trusted_keys if trusted_keys is not None else default_trusted_keys()
            match = next((k for k in keys if key_id(k) == claims["key_id"]), None)
            if match is None:
                msgs.append(f"SIGNATURE: signed by key {claims['key_id']}, which is not a trusted key "
                            f"(trusted: {', '.join(key_id(k)[:16] + '…' for k in keys) or 'none'})")
                res.signature_ok = False
                anchor_ok = False
            else:
                cfg.use_elliptic_key_verifier(public_key=_tmp_pem(d, "pub.pem", public_pem(match)))
        if anchor_ok and path.exists():
            try:
                cfg.set_hashing_config(_hashing_config(kind)).verify(path, sig)
                res.signature_ok = res.content_ok = True
            except ValueError as exc:
                text = str(exc)
                if text.startswith("Signature mismatch"):
                    res.signature_ok, res.content_ok = True, False
                else:
                    res.signature_ok = False
                    msgs.append(f"SIGNATURE: does not verify ({text.splitlines()[0][:300]})")
            except Exception as exc:  # noqa: BLE001 — InvalidSignature, a broken chain, OpenSSL errors
                res.signature_ok = False
                msgs.append(f"SIGNATURE: does not verify ({type(exc).__name__}: {str(exc)[:300]})")
    if path.exists() and res.content_ok is not True:
        _content_diff(path, claims, res)
        res.content_ok = not (res.changed or res.missing or res.added)
        if res.signature_ok is False and res.content_ok:
            msgs.append("NOTE: the files match what the signature claims, but the signature itself does not hold")
    for rel in claims["resources"]:
        p = path / rel if path.is_dir() else path
        if p.is_file():
            res.files_checked += 1
            res.bytes_checked += p.stat().st_size
    res.ok = bool(res.signature_ok and res.content_ok and res.signature_file_ok is not False
                  and res.manifest_ok is not False)
    if res.ok:
        who = (f"certificate {res.certificate['subject']}" if res.certificate else f"key {res.key_id}")
        msgs.insert(0, f"INTACT: {res.kind} {path} — {res.files_checked} files, {res.bytes_checked} bytes; "
                       f"signature OK ({who})")
    res.seconds = round(time.perf_counter() - t0, 4)
    return res


# ================================================================================= the check at load time
# The verified loader (aiir.models) checks a version's recorded signature every time it loads it: the
# gateway at start and on every reload, triage, forensics, retraining. It has the SHA-256 of every file of
# the folder already (the artifact digest needs them), so this check reads the signature bundle, verifies
# its DSSE envelope with ``cryptography`` against the trusted keys and compares the signed file list with
# those digests: no second pass over the files, and no import of model_signing/sigstore (~0.3-0.8 s) on a
# path that may be containment's. It is the same check as model_signing's key verifier (DSSE PAE, ECDSA
# with the curve's hash, key hint = SHA-256 of the SPKI PEM, root digest over the resources); certificate-
# signed versions (a user's PKI: chain validation) go through model_signing itself.

BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
INTOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
INTOTO_STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"


class LoadCheckFailed(Exception):
    """What failed, for the loader's IntegrityError."""


def _pae(payload: bytes) -> bytes:
    """DSSE pre-authentication encoding (what the envelope's signature covers)."""
    t = INTOTO_PAYLOAD_TYPE
    return b" ".join([f"DSSEv1 {len(t)} {t} {len(payload)}".encode(), payload])


def _ecdsa_hash(key):
    from cryptography.hazmat.primitives import hashes

    return {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}[key.curve.key_size]()


def _ignored(rel: str, ignore: set[str]) -> bool:
    return any(rel == i.rstrip("/") or rel.startswith(i.rstrip("/") + "/") for i in ignore)


def check_at_load(folder: str | Path, files: dict[str, str], record: dict[str, Any], *,
                  trusted_keys: list[Any] | None = None, trust_chain: list[Path] | None = None) -> dict[str, Any]:
    """Check the folder being loaded against the signature recorded on its version (tag ``aiir.signature``).

    ``files``: relative POSIX path → SHA-256 of every file of ``folder`` (what the digest was computed from).
    Raises :class:`LoadCheckFailed` naming what failed: the signature file missing or not the one recorded
    at registration, the readable manifest not matching the signed statement, a key that is not trusted, a
    signature that does not verify, a file changed, missing or added. Returns ``{method, key_id, files,
    seconds}``."""
    t0 = time.perf_counter()
    sig = Path(record.get("signature") or "")
    if not record.get("signature"):
        raise LoadCheckFailed("the recorded signature names no signature file")
    try:
        raw = sig.read_bytes()
    except OSError as exc:
        raise LoadCheckFailed(f"signature file {sig} cannot be read ({exc.strerror or exc}): the recorded "
                              "signature cannot be checked") from None
    sha = sha256_bytes(raw)
    if record.get("signature_sha256") and sha != record["signature_sha256"]:
        raise LoadCheckFailed(f"SIGNATURE FILE REPLACED: {sig.name} has sha256 {sha}, the registry recorded "
                              f"{record['signature_sha256']}")
    try:
        bundle = json.loads(raw)
        env = bundle["dsseEnvelope"]
        payload = base64.b64decode(env["payload"], validate=True)
        sig_bytes = base64.b64decode(env["signatures"][0]["sig"], validate=True)
        statement = json.loads(payload)
        pred = statement["predicate"]
        resources = [(r["name"], r["digest"], r.get("algorithm", "sha256")) for r in pred["resources"]]
        subject = statement["subject"]
        vm = bundle.get("verificationMaterial") or {}
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise LoadCheckFailed(f"{sig.name} is not a model-signing signature bundle ({type(exc).__name__}: "
                              f"{str(exc)[:200]})") from None
    if bundle.get("mediaType") != BUNDLE_MEDIA_TYPE or env.get("payloadType") != INTOTO_PAYLOAD_TYPE \
            or statement.get("_type") != INTOTO_STATEMENT_TYPE or statement.get("predicateType") != PREDICATE_TYPE:
        raise LoadCheckFailed(f"{sig.name}: unexpected bundle/statement type (media type {bundle.get('mediaType')!r}, "
                              f"predicate {statement.get('predicateType')!r})")
    if len(subject) != 1 or any(a != "sha256" for _, _, a in resources):
        raise LoadCheckFailed(f"{sig.name}: expected one subject and SHA-256 resources")
    mp = manifest_path_for(sig)
    signed = {n: d for n, d, _ in resources}
    if mp.exists():
        try:
            m = json.loads(mp.read_text(encoding="utf-8"))
            listed = {f["name"]: f["sha256"] for f in m.get("files", [])}
            manifest_ok = listed == signed and m.get("signature_sha256") == sha
        except (ValueError, KeyError, TypeError, OSError):
            manifest_ok = False
        if not manifest_ok:
            raise LoadCheckFailed(f"MANIFEST: {mp.name} does not match the signed statement in {sig.name} "
                                  "(swapped or edited)")
    chain = vm.get("x509CertificateChain") or {}
    if chain.get("certificates"):
        # a user's PKI: chain validation is model_signing's (the heavy import, only for this method)
        res = verify_artifact(folder, sig, kind="model", expected_signature_sha256=record.get("signature_sha256"),
                              trusted_keys=trusted_keys, trust_chain=trust_chain)
        if not res.ok:
            raise LoadCheckFailed("; ".join(res.messages[:6]) or "certificate-signed signature does not verify")
        return {"method": "certificate", "key_id": res.key_id, "files": len(signed),
                "seconds": round(time.perf_counter() - t0, 4)}
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric import ec

    hint = (vm.get("publicKey") or {}).get("hint")
    keys = trusted_keys if trusted_keys is not None else default_trusted_keys()
    key = next((k for k in keys if key_id(k) == hint), None)
    if key is None:
        raise LoadCheckFailed(f"SIGNATURE: {sig.name} is signed by key {hint}, which is not a trusted key "
                              f"(trusted: {', '.join(key_id(k)[:16] + '…' for k in keys) or 'none'})")
    try:
        key.verify(sig_bytes, _pae(payload), ec.ECDSA(_ecdsa_hash(key)))
    except InvalidSignature:
        raise LoadCheckFailed(f"SIGNATURE: {sig.name} does not verify under key {hint} (the signed statement "
                              "or the signature was altered)") from None
    import hashlib

    root = hashlib.sha256(b"".join(bytes.fromhex(d) for _, d, _ in resources)).hexdigest()
    if root != (subject[0].get("digest") or {}).get("sha256"):
        raise LoadCheckFailed(f"{sig.name}: the signed resources do not hash to the signed subject digest")
    ignore = set(pred.get("serialization", {}).get("ignore_paths", [])) | set(GIT_PATHS)
    actual = {k: v for k, v in files.items() if not _ignored(k, ignore)}
    problems = []
    for rel in sorted(set(actual) | set(signed)):
        if rel not in signed:
            problems.append(f"ADDED: {rel} (not in the signed manifest)")
        elif rel not in actual:
            problems.append(f"MISSING: {rel} (signed sha256 {signed[rel]})")
        elif actual[rel] != signed[rel]:
            problems.append(f"CHANGED: {rel} sha256 {actual[rel]}, signed {signed[rel]}")
    if problems:
        raise LoadCheckFailed("; ".join(problems[:8]) + (f"; … {len(problems) - 8} more" if len(problems) > 8 else ""))
    return {"method": "key", "key_id": hint, "files": len(signed), "seconds": round(time.perf_counter() - t0, 4)}
