"""Many processes, one corpus: preparations started together, a lock held by someone else, a killed one.

Everything runs through the real command line (`python -m data.prepare`, `python train.py`), in
processes started at the same moment, on a corpus not prepared yet.
"""

import fcntl
import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

from tests.helpers import REPO

PREPARE = [sys.executable, "-m", "data.prepare", "data=text", "data.tokenizer=char", "data.name=book"]


def book(tmp_path: Path, tinyshakespeare: Path, copies: int = 4) -> Path:
    """Tiny Shakespeare `copies` times over: big enough that preparing it takes a moment."""
    path = tmp_path / "my books" / "book.txt"  # a space in the path, as users have
    path.parent.mkdir()
    path.write_text(tinyshakespeare.read_text() * copies)
    return path


def start(args: list[str]) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def consistent(folder: Path) -> dict:
    """meta.json of a prepared corpus whose every shard's sha256 is the one meta.json records."""
    meta = json.loads((folder / "meta.json").read_text())
    for shard in [*meta["shards"]["train"], *meta["shards"]["val"]]:
        assert hashlib.sha256((folder / shard["file"]).read_bytes()).hexdigest() == shard["sha256"], shard
    return meta


def test_two_prepares_and_two_trainings_started_together_prepare_once(tmp_path, tinyshakespeare):
    path = book(tmp_path, tinyshakespeare)
    data = [f"data.path={path}", f"data.root={tmp_path / 'data'}"]
    train = [sys.executable, "train.py", "data=text", "data.tokenizer=char", "data.name=book", *data, "model=tiny",
             "max_steps=2", "batch_size=2", "eval_batches=1", "compile=false", "suggest_cpu_recipe=false"]
    procs = [start([*PREPARE, *data]), start([*PREPARE, *data]),
             start([*train, f"out_dir={tmp_path / 'run1'}"]), start([*train, f"out_dir={tmp_path / 'run2'}"])]
    outputs = [p.communicate(timeout=600)[0] for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0, 0], outputs
    prepared = [o for o in outputs if "prepared " + str(tmp_path / "data" / "book") + ":" in o]
    assert len(prepared) == 1, outputs  # exactly one preparation; the others found it done
    assert sum("is prepared already" in o for o in outputs) == 3, outputs
    meta = consistent(tmp_path / "data" / "book")
    assert meta["train_tokens"] + meta["val_tokens"] == len(path.read_text())
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == [".book.lock", "book"]  # no partial left


def test_a_prepare_waits_for_the_lock_holder_then_uses_its_result(tmp_path, tinyshakespeare):
    path = book(tmp_path, tinyshakespeare, copies=1)
    (tmp_path / "data").mkdir()
    with open(tmp_path / "data" / ".book.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as another process preparing data/book would hold it
        waiting = start([*PREPARE, f"data.path={path}", f"data.root={tmp_path / 'data'}"])
        time.sleep(5)
        assert waiting.poll() is None  # still waiting
        assert not (tmp_path / "data" / "book").exists()
        fcntl.flock(lock, fcntl.LOCK_UN)
    out = waiting.communicate(timeout=300)[0]
    assert waiting.returncode == 0, out
    assert f"waiting for another process preparing {tmp_path / 'data' / 'book'}" in out
    consistent(tmp_path / "data" / "book")


def test_a_lock_left_by_a_killed_preparation_is_taken_over(tmp_path, tinyshakespeare):
    path = book(tmp_path, tinyshakespeare, copies=20)  # 22 MB: still preparing when killed
    args = [*PREPARE, f"data.path={path}", f"data.root={tmp_path / 'data'}", "data.workers=1"]
    first = start(args)
    deadline = time.time() + 120
    while not list((tmp_path / "data").glob(".book.partial-*")) and time.time() < deadline:
        time.sleep(0.05)
    assert list((tmp_path / "data").glob(".book.partial-*")), "the preparation never started"
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (tmp_path / "data" / ".book.lock").exists() and not (tmp_path / "data" / "book").exists()
    again = subprocess.run(args, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "waiting" not in again.stdout  # the dead process's lock died with it
    consistent(tmp_path / "data" / "book")
    assert not list((tmp_path / "data").glob(".book.partial-*"))  # its partial folder was cleared away


def children(pid: int) -> list[int]:
    """The processes whose parent is pid, from /proc."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            pass  # a process that ended while we looked
    return found


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has ended
    except OSError:
        return False


def test_a_sigkilled_preparation_leaves_no_process_behind(tmp_path, tinyshakespeare):
    lines = [line for line in tinyshakespeare.read_text().split("\n\n") if line.strip()]
    corpus = tmp_path / "my corpus" / "speeches.jsonl"  # 28,000 documents, 15 MB: tokenized by worker processes
    corpus.parent.mkdir()
    corpus.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines * 12))
    first = start([*PREPARE[:-2], "data.tokenizer=gpt2", "data.name=speeches", f"data.path={corpus}",
                   f"data.root={tmp_path / 'data'}", "data.workers=2"])
    deadline, ours = time.time() + 120, []
    while len(ours) < 3 and time.time() < deadline and first.poll() is None:  # 2 workers, the resource tracker
        ours = children(first.pid)
        time.sleep(0.05)
    assert len(ours) >= 3, f"the workers never started: {ours}"
    first.send_signal(signal.SIGKILL)
    first.wait()
    time.sleep(5)
    assert [pid for pid in ours if alive(pid)] == []  # each worker saw its parent go, and the tracker followed
