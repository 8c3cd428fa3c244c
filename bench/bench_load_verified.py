"""Benchmark: what checking a model's signature at load adds (aiir.models.verify_model_files, issue #14).

    .venv/bin/python bench/bench_load_verified.py                   # 40 rounds, 64 MiB large folder
    .venv/bin/python bench/bench_load_verified.py --rounds 10 --mib 16 --no-doc

The verified loader (gateway start and reload, triage, forensics, retraining) used to check the artifact
digest only; it now also checks the version's model-signing signature. Interleaved in one run, on the same
signed folders (a registered version of the synthetic store, and a folder with a ``--mib`` MiB extra file):

* **baseline** — ``verify_folder``: hash every file, compare the tree digest with the recorded one (what
  the loader did before);
* **digest + signature** — ``verify_model_files``: the same hashing, plus the signature check at load
  (signature file as recorded, manifest, trusted key, DSSE/ECDSA signature, every file's signed SHA-256,
  reusing the digests just computed), ``cryptography`` only;
* **model_signing's full verification** (``verify_artifact``, what ``aiir verify`` runs: re-hashes every
  file through model-signing) — for information: what the loader would pay without reusing the digests.

Plus, in fresh processes (interleaved): the import cost of what the load check needs (``aiir.models`` +
``aiir.audit.signing`` + ``cryptography``) against ``import model_signing.verifying``, and a whole
``load_verified`` of the synthetic version (MLflow load included) with and without the signature check (the
baseline process does what the loader did before: ``verify_folder`` + ``mlflow.pyfunc.load_model``).

Results: ``bench/results/load-verified-<UTC>.json`` and the section "## Signature check at model load
(bench/bench_load_verified.py)" of ``docs/benchmarks.md`` (replaced).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import save_json, write_section  # noqa: E402

HEADING = "Signature check at model load (bench/bench_load_verified.py)"
MiB = 1 << 20
MODEL = "bench-load"


def _ms(xs: list[float]) -> dict[str, float]:
    xs = sorted(xs)
    return {"p50": round(statistics.median(xs) * 1000, 3), "p95": round(xs[int(0.95 * (len(xs) - 1))] * 1000, 3),
            "n": len(xs)}


def _fresh(code: str, env: dict[str, str]) -> float:
    """Seconds the snippet reports (it times itself after interpreter start)."""
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if r.returncode:
        raise SystemExit(r.stderr[-3000:])
    return float(r.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--fresh", type=int, default=5, help="fresh-process rounds (imports, whole load)")
    ap.add_argument("--mib", type=int, default=64)
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()

    from aiir.audit import signing
    from aiir.gateway.synthetic import build_store
    from aiir.models import artifact_digest, verify_folder, verify_model_files

    load_before = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="aiir-bench-load-"))
    info = build_store(tmp / "store", MODEL, versions=1)
    os.environ["AIIR_ARTIFACT_TRUSTED_KEYS"] = info["trusted_key"]
    from mlflow import MlflowClient

    from aiir.registry import _local_path

    c = MlflowClient(tracking_uri=info["tracking_uri"], registry_uri=info["tracking_uri"])
    mv = c.get_model_version(MODEL, "1")
    small = _local_path(c.get_model_version_download_uri(MODEL, "1"))
    small_tags = dict(mv.tags)
    # a large folder: the same model plus a --mib MiB file, signed with the store's key
    import shutil

    large = tmp / "large" / "artifacts"
    shutil.copytree(small, large)
    with open(large / "weights.bin", "wb") as fh:
        fh.write(os.urandom(args.mib * MiB))
    spec = signing.SignerSpec(key_path=Path(info["signing_key"]))
    rec = signing.sign_artifact(large, kind="model", name="bench/large", spec=spec)
    large_tags = {"aiir.artifact_sha256": artifact_digest(large), "aiir.signature": json.dumps(
        {k: rec[k] for k in ("signature", "signature_sha256", "manifest", "subject_sha256", "method", "key_id")})}

    cases = {"small": (small, small_tags), "large": (large, large_tags)}
    times: dict[str, dict[str, list[float]]] = {n: {"baseline": [], "signature": [], "model_signing": []}
                                                for n in cases}
    for folder, tags in cases.values():  # warm-up (page cache, first imports)
        verify_folder(folder, tags["aiir.artifact_sha256"], what="warm-up")
        assert verify_model_files(folder, tags, what="warm-up").signature == "verified"
        sig = json.loads(tags["aiir.signature"])
        assert signing.verify_artifact(folder, sig["signature"], kind="model").ok
    for i in range(args.rounds):
        for name, (folder, tags) in cases.items():
            order = ["baseline", "signature"] if i % 2 == 0 else ["signature", "baseline"]
            for what in order:
                t0 = time.perf_counter()
                if what == "baseline":
                    verify_folder(folder, tags["aiir.artifact_sha256"], what="bench")
                else:
                    verify_model_files(folder, tags, what="bench")
                times[name][what].append(time.perf_counter() - t0)
            if i % 4 == 0:  # the full model_signing verification is slower: a quarter of the rounds
                sig = json.loads(tags["aiir.signature"])
                t0 = time.perf_counter()
                signing.verify_artifact(folder, sig["signature"], kind="model")
                times[name]["model_signing"].append(time.perf_counter() - t0)

    env = {**os.environ, "MLFLOW_TRACKING_URI": info["tracking_uri"]}
    imp_light = ("import time; t=time.perf_counter(); import aiir.models, aiir.audit.signing; "
                 "import cryptography.hazmat.primitives.asymmetric.ec, cryptography.hazmat.primitives.serialization; "
                 "print(time.perf_counter()-t)")
    imp_ms = "import time; t=time.perf_counter(); import model_signing.verifying; print(time.perf_counter()-t)"
    uri = info["tracking_uri"]
    load_new = ("import time; t=time.perf_counter(); from aiir.models import load_verified; "
                f"vm = load_verified('{MODEL}', '1', tracking_uri='{uri}', cache=False); "
                "assert vm.signature == 'verified'; print(time.perf_counter()-t)")
    load_old = ("import time; t=time.perf_counter(); import mlflow; "
                "from aiir.models import DIGEST_TAG, local_files, verify_folder; "
                f"local, mv = local_files('{MODEL}', '1', tracking_uri='{uri}'); "
                "verify_folder(local, mv.tags[DIGEST_TAG], what='bench'); mlflow.pyfunc.load_model(str(local)); "
                "print(time.perf_counter()-t)")
    fresh: dict[str, list[float]] = {"import_light": [], "import_model_signing": [], "load_digest_only": [],
                                     "load_digest_and_signature": []}
    for i in range(args.fresh):
        pairs = [("import_light", imp_light), ("import_model_signing", imp_ms),
                 ("load_digest_only", load_old), ("load_digest_and_signature", load_new)]
        if i % 2:
            pairs.reverse()
        for k, code in pairs:
            fresh[k].append(_fresh(code, env))

    res = {"at": datetime.now(UTC).isoformat(), "rounds": args.rounds, "fresh_rounds": args.fresh,
           "load_before": load_before, "load_after": os.getloadavg(),
           "folders": {n: {"files": len(list(Path(f).rglob("*"))), "bytes": sum(p.stat().st_size for p in
                                                                              Path(f).rglob("*") if p.is_file())}
                       for n, (f, _) in cases.items()},
           "check_ms": {n: {k: _ms(v) for k, v in d.items()} for n, d in times.items()},
           "fresh_s": {k: {"median": round(statistics.median(v), 3), "all": [round(x, 3) for x in v]}
                       for k, v in fresh.items()}}
    for d in res["check_ms"].values():
        d["added_p50_ms"] = round(d["signature"]["p50"] - d["baseline"]["p50"], 3)
        d["ratio_p50"] = round(d["signature"]["p50"] / d["baseline"]["p50"], 3) if d["baseline"]["p50"] else None
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out = save_json(f"load-verified-{stamp}", res)
    print(json.dumps(res, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)
    if args.no_doc:
        return
    rows = []
    for n, d in res["check_ms"].items():
        f = res["folders"][n]
        rows.append(f"| {n} ({f['files']} files, {f['bytes'] / MiB:.2f} MiB) | {d['baseline']['p50']} / "
                    f"{d['baseline']['p95']} ms | {d['signature']['p50']} / {d['signature']['p95']} ms | "
                    f"**+{d['added_p50_ms']} ms** ({d['ratio_p50']}×) | {d['model_signing']['p50']} ms |")
    fs = res["fresh_s"]
    body = f"""
The verified loader now checks the version's model-signing signature as well as its digest, before
unpickling. {args.rounds} interleaved rounds on the same signed folders (warm page cache), p50 / p95:

| folder | digest only (before) | digest + signature (now) | added | model_signing's full verify (re-hashes) |
|---|---|---|---|---|
{chr(10).join(rows)}

The signature check reuses the SHA-256 of every file the digest computes, so what it adds does not grow with
the model's size (one JSON parse, one ECDSA verification, a dict comparison); verifying through model_signing
instead would hash every file a second time.

Fresh processes, medians of {args.fresh} interleaved runs: importing what the check needs (`aiir.models`,
`aiir.audit.signing`, `cryptography`) **{fs['import_light']['median']} s** vs `import model_signing.verifying`
**{fs['import_model_signing']['median']} s** (never imported on a load path: the test
`test_a_good_signature_loads_without_importing_model_signing` asserts it). A whole load of the synthetic
version in a fresh process (MLflow import and load included): digest only {fs['load_digest_only']['median']} s,
digest + signature {fs['load_digest_and_signature']['median']} s.

Load average before/after: {load_before[0]:.2f} / {res['load_after'][0]:.2f} (2 CPUs shared; ratios are of
interleaved runs). Raw: `{out.relative_to(out.parents[2])}`.
"""
    write_section(HEADING, body)


if __name__ == "__main__":
    main()
