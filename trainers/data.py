"""Multi-domain byte corpora: build them offline, record what went in, load them for training.

Layout of a corpus directory (one subdirectory per domain, built independently)::

    ROOT/manifest.json          {"format": 1, "domains": {name: record}}
    ROOT/<domain>/train.bin     raw bytes; documents separated by one NUL byte (the EOT token)
    ROOT/<domain>/val.bin       held-out documents, disjoint from train

A domain's record holds its origin, licence note, build parameters, document counts, sizes and
the sha256 of both splits (checked again on load). Documents are taken in an order given by a
keyed hash of their ids (a seeded shuffle that does not depend on the file system), each
truncated to ``max_doc_bytes``, until the domain reaches ``max_bytes``; then the first documents
in that order go to validation until it holds ``val_fraction`` of the bytes. So the split is by
document (no file is in both) and the cap samples the whole source rather than its first files.

Command line::

    python -m trainers.data build --out corpora/default [--domains python,prose,json,cpp]
                                  [--source mine='~/text/**/*.txt'] [--max-mb 8]
    python -m trainers.data list          # built-in sources available on this machine
    python -m trainers.data info ROOT     # print a manifest

``ensure_corpus`` builds whatever domains are missing under a file lock, so parallel workers can
all call it on first use and only one builds.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock

from trainers.sources import BUILTIN, Source, resolve_source

FORMAT = 1
EOT = b"\x00"  # document separator; text files never contain NUL, and those that do lose it
DEFAULT_MAX_BYTES = 8_000_000
DEFAULT_MAX_DOC_BYTES = 200_000
DEFAULT_VAL_FRACTION = 0.1
DEFAULT_CORPUS = Path(os.environ.get("MIXTURE_PLANNER_CORPORA",
                                     Path.home() / ".cache" / "mixture-planner" / "corpora")) / "default"


class CorpusError(RuntimeError):
    """A corpus cannot be built or does not match what was asked for."""


@dataclass
class Corpus:
    """Loaded splits: domain -> uint8 array of bytes (tokens), plus the manifest."""

    root: Path
    manifest: dict[str, Any]
    train: dict[str, np.ndarray]
    val: dict[str, np.ndarray]


def _doc_order_key(doc_id: str, seed: int) -> bytes:
    return hashlib.sha256(f"{seed}:{doc_id}".encode()).digest()


def build_domain(source: Source, out_dir: Path, max_bytes: int = DEFAULT_MAX_BYTES,
                 val_fraction: float = DEFAULT_VAL_FRACTION,
                 max_doc_bytes: int = DEFAULT_MAX_DOC_BYTES, seed: int = 0) -> dict[str, Any]:
    """Write ``train.bin`` and ``val.bin`` for one source into out_dir; return its manifest record."""
    if not 0.0 < val_fraction < 0.5:
        raise CorpusError(f"val_fraction must be in (0, 0.5), got {val_fraction}")
    docs = sorted(source.documents(), key=lambda d: _doc_order_key(d[0], seed))
    if not docs:
        raise CorpusError(f"domain {source.name!r}: no documents found ({source.origin})")
    chosen: list[bytes] = []
    total = 0
    for _, load in docs:
        try:
            text = load()[:max_doc_bytes].replace(EOT, b"")
        except OSError:
            continue  # unreadable file (e.g. a dangling man-page link): skip it
        if not text.strip():
            continue
        chosen.append(text)
        total += len(text) + 1
        if total >= max_bytes:
            break
    if len(chosen) < 2:
        raise CorpusError(f"domain {source.name!r}: need at least 2 non-empty documents "
                          f"for a train/validation split, found {len(chosen)}")
    n_val, val_bytes = 0, 0
    while n_val < len(chosen) - 1 and val_bytes < val_fraction * total:
        val_bytes += len(chosen[n_val]) + 1
        n_val += 1
    splits = {"val": chosen[:n_val], "train": chosen[n_val:]}
    out_dir.mkdir(parents=True, exist_ok=True)
    record: dict[str, Any] = {"origin": source.origin, "licence": source.licence,
                              "params": {"max_bytes": max_bytes, "val_fraction": val_fraction,
                                         "max_doc_bytes": max_doc_bytes, "seed": seed},
                              "documents_available": len(docs), "sha256": {}, "bytes": {},
                              "documents": {}}
    for split, parts in splits.items():
        blob = EOT.join(parts) + EOT
        (out_dir / f"{split}.bin").write_bytes(blob)
        record["sha256"][split] = hashlib.sha256(blob).hexdigest()
        record["bytes"][split] = len(blob)
        record["documents"][split] = len(parts)
    return record


def _read_manifest(root: Path) -> dict[str, Any]:
    path = root / "manifest.json"
    if not path.exists():
        return {"format": FORMAT, "domains": {}}
    manifest = json.loads(path.read_text())
    if manifest.get("format") != FORMAT:
        raise CorpusError(f"{path}: corpus format {manifest.get('format')} is not {FORMAT}; rebuild it")
    return manifest


def _write_manifest(root: Path, manifest: dict[str, Any]) -> None:
    tmp = root / f".manifest.{os.getpid()}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, root / "manifest.json")


def build_corpus(out: str | Path, domains: list[str] | None = None,
                 sources: dict[str, str | list[str]] | None = None, rebuild: bool = False,
                 **build_kw: Any) -> dict[str, Any]:
    """Build (or complete) the corpus at ``out`` and return its manifest.

    domains: names to build; default every built-in source available here. Every key of
        ``sources`` is built too. sources: domain -> glob(s) of the user's own files (overrides a built-in of
        the same name). Domains already present are kept unless ``rebuild``; a present domain
        whose origin differs from the one asked for is an error. build_kw: see ``build_domain``.
    """
    root = Path(out).expanduser().resolve()
    sources = dict(sources or {})
    if domains is None:
        domains = [n for n, s in BUILTIN.items() if n not in sources and s.available()]
    domains = list(domains) + [n for n in sources if n not in domains]
    root.mkdir(parents=True, exist_ok=True)
    with FileLock(str(root / ".lock")):
        manifest = _read_manifest(root)
        for name in domains:
            source = resolve_source(name, sources.get(name))
            have = manifest["domains"].get(name)
            if have is not None and not rebuild:
                if have["origin"] != source.origin:
                    raise CorpusError(f"{root}: domain {name!r} was built from {have['origin']!r}, "
                                      f"not {source.origin!r}; use another corpus dir or rebuild=True")
                continue
            tmp = root / f".build-{name}-{os.getpid()}"
            shutil.rmtree(tmp, ignore_errors=True)
            t0 = time.perf_counter()
            record = build_domain(source, tmp, **build_kw)
            record["build_seconds"] = round(time.perf_counter() - t0, 2)
            shutil.rmtree(root / name, ignore_errors=True)
            os.replace(tmp, root / name)
            manifest["domains"][name] = record
            _write_manifest(root, manifest)
        return manifest


def load_corpus(root: str | Path, domains: list[str], verify: bool = True) -> Corpus:
    """Load the splits of ``domains`` (checking their sha256 against the manifest)."""
    root = Path(root).expanduser().resolve()
    manifest = _read_manifest(root)
    missing = [d for d in domains if d not in manifest["domains"]]
    if missing:
        raise CorpusError(f"{root}: domains {missing} are not built (have {sorted(manifest['domains'])})")
    train, val = {}, {}
    for d in domains:
        rec = manifest["domains"][d]
        for split, store in (("train", train), ("val", val)):
            blob = (root / d / f"{split}.bin").read_bytes()
            if verify and hashlib.sha256(blob).hexdigest() != rec["sha256"][split]:
                raise CorpusError(f"{root / d / split}.bin does not match its manifest sha256; rebuild it")
            store[d] = np.frombuffer(blob, dtype=np.uint8)
    return Corpus(root=root, manifest=manifest, train=train, val=val)


def ensure_corpus(root: str | Path | None, domains: list[str],
                  sources: dict[str, str | list[str]] | None = None, **build_kw: Any) -> Corpus:
    """Load ``domains`` from ``root`` (default ``DEFAULT_CORPUS``), building missing ones first."""
    root = Path(root if root is not None else DEFAULT_CORPUS).expanduser().resolve()
    try:
        manifest = _read_manifest(root)
    except (OSError, json.JSONDecodeError):
        manifest = {"domains": {}}
    if any(d not in manifest["domains"] for d in domains) or sources:
        build_corpus(root, domains, sources=sources, **build_kw)
    return load_corpus(root, domains)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m trainers.data", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="build or complete a corpus")
    b.add_argument("--out", default=str(DEFAULT_CORPUS))
    b.add_argument("--domains", help="comma-separated (default: all built-ins available here)")
    b.add_argument("--source", action="append", default=[], metavar="NAME=GLOB",
                   help="a domain from your own files (repeatable)")
    b.add_argument("--max-mb", type=float, default=DEFAULT_MAX_BYTES / 1e6)
    b.add_argument("--val-fraction", type=float, default=DEFAULT_VAL_FRACTION)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--rebuild", action="store_true")
    sub.add_parser("list", help="built-in sources and whether they are available here")
    i = sub.add_parser("info", help="print a corpus manifest")
    i.add_argument("root")
    a = p.parse_args(argv)
    try:
        if a.cmd == "list":
            for name, s in BUILTIN.items():
                print(f"{name:8s} {'yes' if s.available() else 'no ':3s}  {s.origin}  [{s.licence}]")
        elif a.cmd == "info":
            print(json.dumps(_read_manifest(Path(a.root)), indent=2))
        else:
            sources = dict(s.split("=", 1) for s in a.source)
            domains = a.domains.split(",") if a.domains else None
            m = build_corpus(a.out, domains, sources=sources, rebuild=a.rebuild,
                             max_bytes=int(a.max_mb * 1e6), val_fraction=a.val_fraction, seed=a.seed)
            for name, rec in m["domains"].items():
                print(f"{name:8s} train {rec['bytes']['train']:>10,d} B  val {rec['bytes']['val']:>9,d} B  "
                      f"docs {rec['documents']['train']}+{rec['documents']['val']}  "
                      f"sha256 {rec['sha256']['train'][:12]}")
            print(f"corpus: {Path(a.out).resolve()}")
    except (CorpusError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
