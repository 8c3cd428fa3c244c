"""Write-once evidence bundles: copy + hash in one pass, custody chain, Ed25519-signed manifest.

Layout of ``<store root>/<incident_id>/`` (see ``docs/evidence.md``)::

    files/...          the evidence, as added (0400 files; folders 0500 once sealed)
    custody.jsonl      hash-chained custody log (appended after sealing too, each such entry signed)
    manifest.json      canonical JSON: every file's path, sha256, size, category, description, ...
    manifest.sig       raw 64-byte Ed25519 signature over the exact bytes of manifest.json
    public_key.pem     the signer's public key (SubjectPublicKeyInfo PEM)
    .staging/          partial copies while adding; removed at sealing

Every path the bundle reports (manifest, custody, verification) is relative to the bundle folder,
e.g. ``files/model/MLmodel``.

Concurrency: every change takes an exclusive ``flock`` on the bundle folder, re-reads the custody log
from where it stopped (checking each new link), and only then decides. Copies run outside the lock
into ``.staging/`` and are hard-linked into place under it, so parallel adders never block each other
on I/O and a name is claimed exactly once.

Idempotence: re-adding the same bytes under the same name is a no-op (nothing written, nothing
logged; the first recorded category/description stay), also after sealing; different bytes under an
existing name raise :class:`~aiir.errors.IntegrityError` and are logged as ``refused``. Sealing a
sealed bundle with the same key returns the existing manifest.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import logging
import os
import re
import shutil
import socket
import stat
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiir
from aiir import config
from aiir.errors import BadInput, IntegrityError

from . import custody as _custody
from ._util import (
    canonical_json,
    check_category,
    check_dest,
    check_incident_id,
    loads_strict,
    sha256_hex,
    utc_now,
)
from .copy import copy_and_hash, hash_file, write_and_hash
from .keys import fingerprint, load_private_key_pem, load_signing_key_if_present, public_key_pem

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    from .verify import VerifyResult

log = logging.getLogger("aiir.evidence")

FORMAT = "aiir-evidence-bundle/1"
PAYLOAD_DIR = "files"
STAGING_DIR = ".staging"
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
PUBLIC_KEY = "public_key.pem"
CUSTODY = _custody.CUSTODY_FILENAME
METADATA = (MANIFEST, SIGNATURE, PUBLIC_KEY, CUSTODY)
# Owner-only, like the decision log's folder: evidence holds copies of decisions, data and models.
FILE_MODE = 0o400
DIR_MODE = 0o700
SEALED_DIR_MODE = 0o500

# Suggested categories (any short lower-case word is accepted).
CATEGORIES = ("model", "training_data", "decision_log", "config", "target_state", "finding", "report",
              "forensics", "other")
RESERVED_ACTIONS = frozenset({"opened", "added", "refused", "sealed"})
_ACTION_RE = re.compile(r"^[a-z][a-z0-9_]{0,31}$")


@dataclass(frozen=True)
class FileRecord:
    """One file in a bundle, as the manifest lists it."""

    path: str  # relative to the bundle folder: files/...
    sha256: str
    size: int
    category: str
    description: str
    source: str | None = None
    added_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _actor(actor: str | None) -> str:
    if actor:
        return actor
    env = os.environ.get("AIIR_ACTOR")
    if env:
        return env
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return f"uid:{os.getuid()}"


class EvidenceStore:
    """The write-once evidence store: one bundle folder per incident under ``root``.

    ``fsync=True`` (default) makes every added file, custody entry and the manifest durable before
    the operation returns (an evidence copy that vanishes in a power cut is no evidence). It costs
    disk write bandwidth; ``fsync=False`` leaves flushing to the kernel (see docs/benchmarks.md).
    """

    def __init__(self, root: str | Path | None = None, *, fsync: bool = True):
        self.root = Path(root).expanduser() if root is not None else config.paths().evidence
        self.fsync = fsync

    def path_for(self, incident_id: str) -> Path:
        return self.root / check_incident_id(incident_id)

    def exists(self, incident_id: str) -> bool:
        return (self.path_for(incident_id) / CUSTODY).is_file()

    def incidents(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / CUSTODY).is_file())

    def open_bundle(self, incident_id: str, *, actor: str | None = None, host: str | None = None,
                    context: dict[str, Any] | None = None) -> Bundle:
        """The bundle for ``incident_id``, created (custody entry ``opened``) if it does not exist yet.

        ``actor`` is who acts (default ``$AIIR_ACTOR`` or the login name); ``host`` defaults to the
        hostname; ``context`` (e.g. Airflow dag_id/run_id/task_id/try_number) goes into every custody
        entry written through this handle. Opening an existing bundle writes nothing.
        """
        path = self.path_for(incident_id)
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            path.mkdir(mode=DIR_MODE)
            _chmod_quiet(path, DIR_MODE)  # whatever the umask
        except FileExistsError:
            pass
        bundle = Bundle(path, actor=actor, host=host, context=context, fsync=self.fsync)
        with bundle._locked():
            if bundle._chain.seq < 0:
                (path / PAYLOAD_DIR).mkdir(exist_ok=True, mode=DIR_MODE)
                bundle._append("opened", incident_id=incident_id, bundle_id=uuid.uuid4().hex, format=FORMAT,
                               tool={"name": "aiir", "version": aiir.__version__})
        return bundle

    def get(self, incident_id: str, *, actor: str | None = None, host: str | None = None,
            context: dict[str, Any] | None = None) -> Bundle:
        """An existing bundle (BadInput if there is none)."""
        if not self.exists(incident_id):
            raise BadInput(f"incident {incident_id}", f"no evidence bundle under {self.root}")
        return Bundle(self.path_for(incident_id), actor=actor, host=host, context=context, fsync=self.fsync)


class Bundle:
    """A handle on one bundle folder. Obtain it from :meth:`EvidenceStore.open_bundle`."""

    def __init__(self, path: str | Path, *, actor: str | None = None, host: str | None = None,
                 context: dict[str, Any] | None = None, fsync: bool = True,
                 signing_key: Ed25519PrivateKey | None = None):
        self.path = Path(path)
        # signs custody entries appended after sealing (default: this machine's signing key, if any)
        self._signing_key = signing_key
        self.actor = _actor(actor)
        self.host = host or socket.gethostname()
        self.context = dict(context or {})
        self.fsync = fsync
        self._chain = _custody.ChainState()
        self._seen = 0
        self._files: dict[str, FileRecord] = {}
        self._dirs: set[str] = set()
        self._bundle_id: str | None = None
        self._incident_id: str | None = None
        self._opened_at: str | None = None
        self._sealed_entries: list[dict[str, Any]] = []
        try:
            json.dumps(self.context, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BadInput("context", f"must be JSON-serialisable: {exc}") from None

    # ------------------------------------------------------------------ state
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | getattr(os, "O_CLOEXEC", 0))
        except FileNotFoundError:
            raise BadInput(str(self.path), "no such bundle folder") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._refresh()
            yield
        finally:
            os.close(fd)  # releases the lock

    def _refresh(self) -> None:
        _custody.read_chain(self.path / CUSTODY, self._chain)
        if self._chain.problems:
            raise IntegrityError(f"{self.path}: custody log is broken ({self._chain.problems[0]}); "
                                 "nothing more is written to this bundle — run `aiir verify` on it")
        self._absorb()

    def _absorb(self) -> None:
        for e in self._chain.entries[self._seen:]:
            action = e.get("action")
            if action == "opened":
                self._bundle_id = e.get("bundle_id")
                self._incident_id = e.get("incident_id")
                self._opened_at = e.get("at")
            elif action == "added":
                rec = FileRecord(path=e["file"], sha256=e["sha256"], size=e["size"], category=e["category"],
                                 description=e.get("description", ""), source=e.get("source"),
                                 added_at=e.get("at"))
                self._files[rec.path] = rec
                parts = rec.path.split("/")
                self._dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))
            elif action == "sealed":
                self._sealed_entries.append(e)
        self._seen = len(self._chain.entries)

    def _post_seal_key(self) -> Ed25519PrivateKey | None:
        if self._signing_key is None:
            self._signing_key = load_signing_key_if_present()
        return self._signing_key

    def _append(self, action: str, **fields: Any) -> dict[str, Any]:
        entry = {"at": utc_now(), "action": action, "actor": self.actor, "host": self.host, "pid": os.getpid(),
                 "context": self.context}
        entry.update({k: v for k, v in fields.items() if v is not None})
        sign = None
        if self._is_sealed():  # past the signed manifest's custody head: every entry carries a signature
            key = self._post_seal_key()
            if key is None:
                raise BadInput(f"bundle {self.path.name}", "is sealed: custody entries after sealing must be "
                               "signed, and no signing key is available (pass signing_key=, or create "
                               "$AIIR_HOME/keys/evidence_ed25519.pem with `aiir evidence pubkey`)")
            sign = _custody.signer(key)
        appended = _custody.append_entry(self.path / CUSTODY, self._chain, entry, fsync=self.fsync, sign=sign)
        self._absorb()
        return appended

    def _is_sealed(self) -> bool:
        return (self.path / MANIFEST).exists() or bool(self._sealed_entries)

    @property
    def incident_id(self) -> str:
        with self._locked():
            return self._incident_id or self.path.name

    @property
    def bundle_id(self) -> str | None:
        with self._locked():
            return self._bundle_id

    @property
    def sealed(self) -> bool:
        with self._locked():
            return self._is_sealed()

    @property
    def files(self) -> list[FileRecord]:
        with self._locked():
            return [self._files[k] for k in sorted(self._files)]

    @property
    def manifest(self) -> dict[str, Any] | None:
        p = self.path / MANIFEST
        return loads_strict(p.read_bytes(), str(p)) if p.exists() else None

    def custody(self) -> list[dict[str, Any]]:
        with self._locked():
            return [dict(e) for e in self._chain.entries]

    # ------------------------------------------------------------------ adding
    def _check_can_add(self, dest: str) -> None:
        if self._is_sealed():
            raise BadInput(f"bundle {self.path.name}", f"is sealed; {dest} cannot be added (open a new bundle)")
        if dest in self._dirs:
            raise BadInput(dest, "is already a folder in the bundle")
        parts = dest.split("/")
        for i in range(1, len(parts)):
            parent = "/".join(parts[:i])
            if parent in self._files:
                raise BadInput(dest, f"{parent} is already a file in the bundle")

    def _same_or_refuse(self, rec: FileRecord, sha: str, size: int, source: str | None) -> FileRecord:
        if rec.sha256 == sha and rec.size == size:
            return rec
        try:
            self._append("refused", file=rec.path, sha256=sha, size=size, recorded_sha256=rec.sha256,
                         source=source, reason="different content for an existing name (write-once)")
        except BadInput:  # sealed and no key to sign the entry with: refuse without logging
            log.warning("%s: refusal of %s not logged (no signing key)", self.path.name, rec.path)
        raise IntegrityError(f"{self.path.name}/{rec.path}: write-once — already holds sha256 {rec.sha256} "
                             f"({rec.size} bytes); refusing different content {sha} ({size} bytes)")

    def _stage_path(self) -> Path:
        staging = self.path / STAGING_DIR
        staging.mkdir(exist_ok=True)
        return staging / f"partial-{uuid.uuid4().hex}"

    def _stage_file(self, src: Path) -> tuple[Path, str, int]:
        staged = self._stage_path()
        try:
            sha, size = copy_and_hash(src, staged)
            if self.fsync:
                _fsync_path(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        return staged, sha, size

    def _commit(self, staged: Path, dest: str, sha: str, size: int, category: str, description: str,
                source: str | None) -> FileRecord:
        """Under the lock: claim ``dest`` for the staged copy (or resolve an earlier claim)."""
        try:
            rec = self._files.get(dest)
            if rec is not None:
                return self._same_or_refuse(rec, sha, size, source)
            self._check_can_add(dest)
            final = self.path / dest
            final.parent.mkdir(parents=True, exist_ok=True, mode=DIR_MODE)
            os.chmod(staged, FILE_MODE)
            try:
                os.link(staged, final)
            except FileExistsError:
                # Left by an add that was interrupted between linking and logging: adopt it only
                # if it holds exactly these bytes.
                try:
                    osha, osize = hash_file(final, follow_symlinks=False)
                except BadInput:
                    osha, osize = "", -1
                if (osha, osize) != (sha, size):
                    raise IntegrityError(f"{self.path.name}/{dest} exists on disk but not in the custody log, "
                                         "with other content; refusing to adopt it") from None
                log.warning("adopting %s/%s left by an interrupted add", self.path.name, dest)
            if self.fsync:
                _fsync_path(final.parent)
            self._append("added", file=dest, sha256=sha, size=size, category=category,
                         description=description, source=source)
            return self._files[dest]
        finally:
            staged.unlink(missing_ok=True)
            if self._is_sealed():  # lost a race with seal(): leave no staging folder behind
                with contextlib.suppress(OSError):
                    staged.parent.rmdir()

    def add_file(self, src: str | Path, dest_name: str | None = None, *, category: str,
                 description: str = "") -> FileRecord:
        """Copy regular file ``src`` to ``files/<dest_name>`` (default: its file name), hashing in one pass."""
        check_category(category)
        src = Path(src)
        dest = f"{PAYLOAD_DIR}/{check_dest(dest_name if dest_name is not None else src.name)}"
        source = os.path.abspath(src)
        with self._locked():
            rec = self._files.get(dest)
            if rec is None:
                self._check_can_add(dest)
        if rec is not None:  # records never change, so compare outside the lock
            sha, size = hash_file(src)
            with self._locked():
                return self._same_or_refuse(rec, sha, size, source)
        staged, sha, size = self._stage_file(src)
        with self._locked():
            return self._commit(staged, dest, sha, size, category, description, source)

    def add_bytes(self, data: bytes, dest_name: str, *, category: str, description: str = "",
                  source: str | None = None) -> FileRecord:
        """Store ``data`` as ``files/<dest_name>``."""
        check_category(category)
        dest = f"{PAYLOAD_DIR}/{check_dest(dest_name)}"
        with self._locked():
            rec = self._files.get(dest)
            if rec is not None:
                return self._same_or_refuse(rec, sha256_hex(data), len(data), source)
            self._check_can_add(dest)
        staged = self._stage_path()
        try:
            sha, size = write_and_hash(data, staged)
            if self.fsync:
                _fsync_path(staged)
        except BaseException:
            staged.unlink(missing_ok=True)
            raise
        with self._locked():
            return self._commit(staged, dest, sha, size, category, description, source)

    def add_json(self, obj: Any, dest_name: str, *, category: str, description: str = "") -> FileRecord:
        """Store ``obj`` as indented, key-sorted JSON (same object → same bytes → idempotent)."""
        try:
            data = json.dumps(obj, indent=2, sort_keys=True, ensure_ascii=False, default=str).encode() + b"\n"
        except (TypeError, ValueError) as exc:
            raise BadInput(dest_name, f"cannot serialise to JSON: {exc}") from None
        return self.add_bytes(data, dest_name, category=category, description=description)

    def add_tree(self, src_dir: str | Path, dest_prefix: str | None = None, *, category: str,
                 description: str = "", workers: int | None = None) -> list[FileRecord]:
        """Copy every regular file below ``src_dir`` to ``files/<dest_prefix>/<relative path>``.

        ``dest_prefix`` defaults to the folder's name; ``""`` puts the files directly under ``files/``.
        Symbolic links to files are copied as the file they point to; links to folders, FIFOs,
        sockets and devices are skipped (logged as warnings). Empty folders are not recorded.
        Files are copied by ``workers`` threads (default: up to 2 per CPU, at most 4) and committed
        in sorted order.
        """
        check_category(category)
        src_dir = Path(src_dir)
        if not src_dir.is_dir():
            raise BadInput(str(src_dir), "no such folder")
        prefix = check_dest(dest_prefix if dest_prefix is not None else src_dir.resolve().name, "dest_prefix") \
            if dest_prefix != "" else ""
        items: list[tuple[Path, str]] = []
        for root, dirs, names in os.walk(src_dir, followlinks=False):
            dirs.sort()
            for d in list(dirs):
                if os.path.islink(os.path.join(root, d)):
                    log.warning("skipping %s: symbolic link to a folder", os.path.join(root, d))
                    dirs.remove(d)
            for name in sorted(names):
                p = Path(root, name)
                try:
                    st = p.stat()
                except OSError as exc:
                    log.warning("skipping %s: %s", p, exc.strerror)
                    continue
                if not stat.S_ISREG(st.st_mode):
                    log.warning("skipping %s: not a regular file", p)
                    continue
                rel = p.relative_to(src_dir).as_posix()
                dest = f"{PAYLOAD_DIR}/{check_dest(f'{prefix}/{rel}' if prefix else rel)}"
                items.append((p, dest))
        items.sort(key=lambda t: t[1])
        if not items:
            log.warning("%s holds no regular file; nothing added", src_dir)
            return []
        with self._locked():
            existing = {dest: self._files[dest] for _, dest in items if dest in self._files}
            for _, dest in items:
                if dest not in existing:
                    self._check_can_add(dest)

        def work(item: tuple[Path, str]) -> tuple[Path | None, str, int]:
            src, dest = item
            if dest in existing:
                sha, size = hash_file(src)
                return None, sha, size
            return self._stage_file(src)

        n = workers or min(4, max(1, (os.cpu_count() or 1)))
        results: list[tuple[Path | None, str, int] | BaseException] = []
        with ThreadPoolExecutor(max_workers=n, thread_name_prefix="aiir-evidence") as pool:
            futures = [pool.submit(work, it) for it in items]
            for f in futures:
                try:
                    results.append(f.result())
                except BaseException as exc:
                    results.append(exc)
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            for r in results:
                if not isinstance(r, BaseException) and r[0] is not None:
                    r[0].unlink(missing_ok=True)
            raise failures[0]
        records: list[FileRecord] = []
        with self._locked():
            for (src, dest), (staged, sha, size) in zip(items, results, strict=True):  # type: ignore[misc]
                source = os.path.abspath(src)
                if staged is None:
                    records.append(self._same_or_refuse(existing[dest], sha, size, source))
                else:
                    records.append(self._commit(staged, dest, sha, size, category, description, source))
        return records

    def record(self, action: str, **fields: Any) -> dict[str, Any]:
        """Append a custody event of your own (``exported``, ``transferred``, ``note`` ...), also after sealing."""
        if not isinstance(action, str) or not _ACTION_RE.match(action) or action in RESERVED_ACTIONS:
            raise BadInput("action", f"{action!r}: expected a lower-case word other than {sorted(RESERVED_ACTIONS)}")
        reserved = {"at", "action", "actor", "host", "pid", "context", "seq", "prev",
                    *_custody.SIGNED_FIELDS} & set(fields)
        if reserved:
            raise BadInput("fields", f"{sorted(reserved)} are set by aiir")
        try:
            json.dumps(fields, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise BadInput("fields", f"not JSON-serialisable: {exc}") from None
        with self._locked():
            return dict(self._append(action, **fields))

    # ------------------------------------------------------------------ sealing
    def seal(self, signing_key: Ed25519PrivateKey | bytes | str, *, rehash: bool = False) -> dict[str, Any]:
        """Write ``manifest.json``, ``manifest.sig`` and ``public_key.pem``; log ``sealed``; lock down modes.

        Before signing, every recorded file must be on disk with its recorded size and nothing else
        may be under ``files/``; ``rehash=True`` also re-reads every file and compares digests (the
        digests were computed as the bytes were written, so this doubles the I/O for a second check).
        Sealing a sealed bundle with the same key returns its manifest; a different key is refused.
        """
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        key = signing_key if isinstance(signing_key, Ed25519PrivateKey) else load_private_key_pem(signing_key)
        fp = fingerprint(key)
        self._signing_key = key  # signs the 'sealed' entry (and later ones through this handle)
        with self._locked():
            if (self.path / MANIFEST).exists():
                return self._resume_sealed(fp)
            if not self._bundle_id:
                raise IntegrityError(f"{self.path}: custody log has no 'opened' entry; not an aiir bundle")
            if not self._files:
                raise BadInput(f"bundle {self.path.name}", "holds no file; nothing to seal")
            self._check_disk(rehash)
            staging = self.path / STAGING_DIR
            if staging.exists():
                shutil.rmtree(staging)
            files = [self._files[k] for k in sorted(self._files)]
            manifest = {
                "format": FORMAT,
                "bundle_id": self._bundle_id,
                "incident_id": self._incident_id or self.path.name,
                "opened_at": self._opened_at,
                "sealed_at": utc_now(),
                "sealed_by": {"actor": self.actor, "host": self.host, "pid": os.getpid(), "context": self.context},
                "tool": {"name": "aiir", "version": aiir.__version__},
                "hash_algorithm": "sha256",
                "signature_algorithm": "Ed25519",
                "public_key_sha256": fp,
                "custody_head": {"seq": self._chain.seq, "sha256": self._chain.head},
                "file_count": len(files),
                "total_bytes": sum(f.size for f in files),
                "files": [f.to_dict() for f in files],
            }
            data = canonical_json(manifest)
            _write_readonly(self.path / PUBLIC_KEY, public_key_pem(key), self.fsync)
            _write_readonly(self.path / SIGNATURE, key.sign(data), self.fsync)
            _write_readonly(self.path / MANIFEST, data, self.fsync)  # last: its presence means sealed
            if self.fsync:
                _fsync_path(self.path)
            self._append("sealed", manifest_sha256=sha256_hex(data), public_key_sha256=fp,
                         file_count=manifest["file_count"], total_bytes=manifest["total_bytes"])
            self._lock_down()
            return manifest

    def _resume_sealed(self, fp: str) -> dict[str, Any]:
        data = (self.path / MANIFEST).read_bytes()
        manifest = loads_strict(data, str(self.path / MANIFEST))
        if manifest.get("public_key_sha256") != fp:
            raise IntegrityError(f"{self.path.name} is already sealed with key {manifest.get('public_key_sha256')}; "
                                 f"refusing to seal again with key {fp}")
        digest = sha256_hex(data)
        if not any(e.get("manifest_sha256") == digest for e in self._sealed_entries):
            # interrupted between writing the manifest and logging it: finish the job
            self._append("sealed", manifest_sha256=digest, public_key_sha256=fp,
                         file_count=manifest.get("file_count"), total_bytes=manifest.get("total_bytes"))
            self._lock_down()
        return manifest

    def _check_disk(self, rehash: bool) -> None:
        on_disk = dict(_walk_payload(self.path))
        problems: list[str] = []
        for rel, st in sorted(on_disk.items()):
            if rel not in self._files:
                problems.append(f"{rel} is on disk but not in the custody log")
            elif not stat.S_ISREG(st.st_mode):
                problems.append(f"{rel} is not a regular file")
            elif st.st_size != self._files[rel].size:
                problems.append(f"{rel} has {st.st_size} bytes, {self._files[rel].size} were recorded")
        problems += [f"{rel} is missing" for rel in sorted(set(self._files) - set(on_disk))]
        if not problems and rehash:
            def check(rec: FileRecord) -> str | None:
                sha, _ = hash_file(self.path / rec.path, follow_symlinks=False)
                return None if sha == rec.sha256 else f"{rec.path} no longer matches its recorded sha256"
            with ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
                problems += [p for p in pool.map(check, self._files.values()) if p]
        if problems:
            raise IntegrityError(f"{self.path.name}: cannot seal: " + "; ".join(problems[:10])
                                 + (f" (+{len(problems) - 10} more)" if len(problems) > 10 else ""))

    def _lock_down(self) -> None:
        payload = self.path / PAYLOAD_DIR
        for root, dirs, _ in os.walk(payload, topdown=False):
            for d in dirs:
                _chmod_quiet(Path(root, d), SEALED_DIR_MODE)
        _chmod_quiet(payload, SEALED_DIR_MODE)
        _chmod_quiet(self.path / CUSTODY, 0o600)
        _chmod_quiet(self.path, SEALED_DIR_MODE)

    # ------------------------------------------------------------------ verification
    def verify(self, public_key: Ed25519PublicKey | bytes | str | Path | None = None, *,
               record: bool = True, **kwargs: Any) -> VerifyResult:
        """:func:`~aiir.evidence.verify.verify_bundle` on this bundle (same keyword options)."""
        from .verify import verify_bundle

        return verify_bundle(self.path, public_key, record=record, actor=self.actor, host=self.host,
                             context=self.context, signing_key=self._signing_key, **kwargs)


def _walk_payload(bundle: Path) -> Iterator[tuple[str, os.stat_result]]:
    """(bundle-relative path, lstat) of every non-folder entry below files/, without following links."""
    payload = bundle / PAYLOAD_DIR
    for root, dirs, names in os.walk(payload, followlinks=False):
        for d in list(dirs):
            p = os.path.join(root, d)
            if os.path.islink(p):  # a link to a folder is an entry, not a folder to descend
                dirs.remove(d)
                names.append(d)
        for name in names:
            p = os.path.join(root, name)
            yield Path(p).relative_to(bundle).as_posix(), os.lstat(p)


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_readonly(path: Path, data: bytes, fsync: bool) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), FILE_MODE)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def _chmod_quiet(path: Path, mode: int) -> None:
    try:
        os.chmod(path, mode)
    except OSError as exc:  # e.g. a store on a filesystem without modes
        log.warning("cannot chmod %s: %s", path, exc.strerror)
