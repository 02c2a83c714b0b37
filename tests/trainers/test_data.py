"""Corpus building: manifest, hashes, document-level splits, user files, locking, CLI."""
from __future__ import annotations

import hashlib
import json
from concurrent.futures import ProcessPoolExecutor

import pytest

from trainers.data import (
    EOT,
    CorpusError,
    build_corpus,
    ensure_corpus,
    load_corpus,
    main,
)
from trainers.sources import BUILTIN


def docs_of(blob: bytes) -> list[bytes]:
    return [d for d in blob.split(EOT) if d]


@pytest.fixture()
def user_files(tmp_path):
    src = tmp_path / "mine"
    src.mkdir()
    for i in range(30):
        (src / f"note{i:02d}.txt").write_text(f"note {i}: " + "lorem ipsum dolor " * (20 + i))
    return src


def test_build_records_hashes_licences_and_disjoint_splits(tmp_path, user_files):
    root = tmp_path / "c"
    cap = 150_000
    m = build_corpus(root, ["python", "prose"], sources={"notes": str(user_files / "*.txt")},
                     max_bytes=cap, max_doc_bytes=20_000)
    assert set(m["domains"]) == {"python", "prose", "notes"}
    for name, rec in m["domains"].items():
        train = (root / name / "train.bin").read_bytes()
        val = (root / name / "val.bin").read_bytes()
        assert rec["sha256"] == {"train": hashlib.sha256(train).hexdigest(),
                                 "val": hashlib.sha256(val).hexdigest()}
        assert rec["licence"] and rec["origin"]
        # the cap stops after the document that crosses it; a document is at most 20 kB
        assert len(train) + len(val) <= cap + 20_000 + 2
        t_docs, v_docs = docs_of(train), docs_of(val)
        assert not set(t_docs) & set(v_docs)                  # split by document
        assert rec["documents"] == {"train": len(t_docs), "val": len(v_docs)}
        # val takes whole documents until it holds >= 10 % of the bytes, so 10 % plus one doc
        assert 0.1 <= len(val) / (len(train) + len(val)) <= 0.1 + 20_001 / (len(train) + len(val))
    assert m["domains"]["notes"]["licence"].startswith("user-supplied")
    assert m["domains"]["python"]["licence"].startswith("PSF-2.0")
    # on disk the manifest is the same JSON
    assert json.loads((root / "manifest.json").read_text()) == m


def test_build_is_deterministic_and_load_verifies_hashes(tmp_path):
    a = build_corpus(tmp_path / "a", ["prose"], max_bytes=50_000)
    b = build_corpus(tmp_path / "b", ["prose"], max_bytes=50_000)
    assert a["domains"]["prose"]["sha256"] == b["domains"]["prose"]["sha256"]
    corpus = load_corpus(tmp_path / "a", ["prose"])
    assert corpus.train["prose"].dtype.name == "uint8"
    (tmp_path / "a" / "prose" / "val.bin").write_bytes(b"tampered")
    with pytest.raises(CorpusError, match="sha256"):
        load_corpus(tmp_path / "a", ["prose"])


def test_origin_mismatch_and_unknown_domain_are_errors(tmp_path, user_files):
    root = tmp_path / "c"
    build_corpus(root, ["notes"], sources={"notes": str(user_files / "note0*.txt")}, max_bytes=10_000)
    with pytest.raises(CorpusError, match="was built from"):
        build_corpus(root, ["notes"], sources={"notes": str(user_files / "note1*.txt")})
    with pytest.raises(ValueError, match="unknown domain 'nope'"):
        build_corpus(root, ["nope"])
    with pytest.raises(CorpusError, match="no documents"):
        build_corpus(root, ["empty"], sources={"empty": str(tmp_path / "nothing" / "*.txt")})


def _ensure(root: str) -> str:
    c = ensure_corpus(root, ["prose"], max_bytes=40_000)
    return c.manifest["domains"]["prose"]["sha256"]["train"]


def test_parallel_first_use_builds_once_under_the_lock(tmp_path):
    root = str(tmp_path / "shared")
    with ProcessPoolExecutor(max_workers=3) as pool:
        shas = list(pool.map(_ensure, [root] * 3))
    assert len(set(shas)) == 1
    leftovers = [p.name for p in (tmp_path / "shared").iterdir() if p.name.startswith(".build")]
    assert leftovers == []


def test_builtin_sources_guaranteed_on_a_fresh_install():
    # python and prose ship with the interpreter; json and cpp with the botocore/torch wheels.
    for name in ("python", "prose", "json", "cpp"):
        assert BUILTIN[name].available(), name


def test_cli_build_and_info(tmp_path, capsys, user_files):
    out = tmp_path / "cli"
    rc = main(["build", "--out", str(out), "--domains", "prose",
               "--source", f"notes={user_files}/*.txt", "--max-mb", "0.05"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "prose" in printed and "notes" in printed
    assert main(["info", str(out)]) == 0
    assert main(["build", "--out", str(out), "--domains", "nope"]) == 2
