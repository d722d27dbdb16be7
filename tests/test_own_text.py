"""Training on your own text, through the real commands: each corpus in its own folder, found again by
name, and a run that resumes on exactly the tokens it trained on, or refuses. Nothing is overwritten."""

import os
from pathlib import Path

import pytest

from data.config import DataConfig, corpus_name
from tests.helpers import REPO, fingerprint, run_command

TINY = ["model=tiny", "batch_size=4", "eval_batches=1", "log_interval=1", "eval_interval=2", "progress=false",
        "compile=false", "suggest_cpu_recipe=false"]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def prepare(*overrides: str):
    return run_command("-m", "data.prepare", *overrides, timeout=120)


def train(*overrides: str):
    resuming = any(o.startswith("resume=") for o in overrides)  # a resumed run keeps its own settings
    return run_command(str(REPO / "train.py"), *([] if resuming else TINY), *overrides, timeout=300)


@pytest.mark.parametrize("path,tokenizer,name", [("book.txt", "char", "book_char"),
                                                 ("~/War and Peace.txt", "gpt2", "War_and_Peace_gpt2"),
                                                 ("corpus/", "char", "corpus_char"),
                                                 ("notes.v2.md", "hf:models/SmolLM2-135M/", "notes.v2_hf_SmolLM2-135M"),
                                                 ("shards.jsonl", "char", "shards_char"),
                                                 ("Book.TXT", "char", "Book_char"),
                                                 (".hidden.txt", "char", "hidden_char"),  # never a hidden folder
                                                 ("/", "char", "text_char")])
def test_an_own_corpus_is_named_after_its_file_and_tokenizer(path, tokenizer, name):
    assert corpus_name(path, tokenizer) == name
    assert DataConfig(name=None, path=path, tokenizer=tokenizer).name == name
    assert DataConfig(name="mine", path=path, tokenizer=tokenizer).name == "mine"  # data.name wins


def test_dot_dot_is_named_after_the_folder_it_means(tmp_path, monkeypatch):
    (tmp_path / "inner").mkdir()
    monkeypatch.chdir(tmp_path / "inner")
    assert corpus_name("..", "gpt2") == f"{tmp_path.name}_gpt2"


def test_two_texts_prepare_into_two_folders_and_neither_is_overwritten(tmp_path):
    root = tmp_path / "data"
    book = write(tmp_path / "book.txt", "It was the best of times, it was the worst of times.\n" * 40)
    notes = write(tmp_path / "my notes" / "notes.txt", "Buy milk. Call Alice. Fix the bike.\n" * 40)
    r = prepare("data=text", f"data.path={book}", f"data.root={root}")
    assert r.returncode == 0, r.stderr
    first = fingerprint(root / "book_char")
    r = prepare("data=text", f"data.path={notes}", f"data.root={root}")
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in root.iterdir() if p.suffix != ".lock") == ["book_char", "notes_char"]
    assert fingerprint(root / "book_char") == first

    # the same name for another text, given by hand: refused with one line, nothing changed
    r = prepare("data=text", f"data.path={notes}", "data.name=book_char", f"data.root={root}")
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "Traceback" not in r.stderr
    assert f"holds another corpus, prepared from {book}: give {notes} its own name with data.name=NAME" in r.stderr
    assert fingerprint(root / "book_char") == first


def test_a_prepared_corpus_is_found_again_by_name_without_its_path(tmp_path):
    root = tmp_path / "data"
    book = write(tmp_path / "book.txt", "It was the best of times, it was the worst of times.\n" * 40)
    assert prepare("data=text", f"data.path={book}", f"data.root={root}").returncode == 0
    book.rename(tmp_path / "moved.txt")  # the source is not needed any more
    r = train("data=text", "data.name=book_char", f"data.root={root}", "max_steps=2", f"out_dir={tmp_path}/run")
    assert r.returncode == 0, r.stderr
    assert "prepared before from" in r.stdout and "data: book_char" in r.stdout

    gpt2 = write(tmp_path / "notes.txt", "Buy milk. Call Alice. Fix the bike.\n" * 40)
    assert prepare("data=text", f"data.path={gpt2}", "data.tokenizer=gpt2", f"data.root={root}").returncode == 0
    r = train("data=text", "data.name=notes_gpt2", f"data.root={root}", "max_steps=1", "batch_size=1",
              "model.block_size=8", f"out_dir={tmp_path}/run3")
    assert r.returncode == 0, r.stderr
    saved = (tmp_path / "run3/config.yaml").read_text()  # the tokenizer the corpus was made with, not char
    assert "tokenizer: gpt2" in saved and "name: notes_gpt2" in saved

    for args, message in [(["data.name=nobook"], "data.name=nobook is not prepared yet under "),
                          ([], "error: your own text needs data.path=FILE_OR_FOLDER, or data.name=NAME")]:
        r = train("data=text", *args, f"data.root={root}", "max_steps=2", f"out_dir={tmp_path}/run2")
        assert r.returncode == 2 and r.stderr.count("\n") == 1 and message in r.stderr, r.stderr
        assert not (tmp_path / "run2").exists()
    assert "(prepared: book_char, notes_gpt2)" in train("data=text", "data.name=nobook", f"data.root={root}").stderr


def test_a_run_resumes_on_the_tokens_it_trained_on_or_refuses(tmp_path):
    root = tmp_path / "data"
    book = write(tmp_path / "book.txt", "It was the best of times, it was the worst of times.\n" * 40)
    run = tmp_path / "run"
    r = train("data=text", f"data.path={book}", f"data.root={root}", "max_steps=4", "stop_step=2", f"out_dir={run}")
    assert r.returncode == 0, r.stderr
    book.rename(tmp_path / "away.txt")  # resume finds the prepared tokens under the run's data.name
    r = train(f"resume={run}", "stop_step=3")
    assert r.returncode == 0, r.stderr

    # the same text prepared again (touched: a new modification time, the same tokens): the run goes on
    (tmp_path / "away.txt").rename(book)
    os.utime(book, (1, 1))
    r = prepare("data=text", f"data.path={book}", f"data.root={root}")
    assert r.returncode == 0 and "preparing it again" in r.stdout, r.stdout
    r = train(f"resume={run}", "stop_step=4")
    assert r.returncode == 0, r.stderr

    # another text named on the command line of a resume: refused, the run continues on its own data only
    before = fingerprint(run)
    r = train(f"resume={run}", f"data.path={tmp_path / 'other.txt'}")
    assert r.returncode == 2 and "resume continues on the data the run trained on; 'data.path=" in r.stderr
    assert fingerprint(run) == before

    # the text is edited and prepared again under the same name: the run refuses rather than mix data
    write(book, "Completely different words now, a new version of the book.\n" * 40)
    assert prepare("data=text", f"data.path={book}", f"data.root={root}").returncode == 0
    before = fingerprint(run)
    r = train(f"resume={run}", "max_steps=8")
    assert r.returncode == 2 and r.stderr.count("\n") == 1, r.stderr
    assert f"{root / 'book_char'} no longer holds the tokens this run trained on" in r.stderr
    assert fingerprint(run) == before
