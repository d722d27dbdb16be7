"""A disk that fills while ropegpt writes (a checkpoint, metrics.jsonl, train.log, loss.png, token shards):
one line naming the folder, the space needed and the space free, exit code 2, no traceback, the previous
checkpoint intact and no partial file left (runtime/files.py). By injection, then on a real small tmpfs
where the machine lets the test mount one."""

import errno
import os
import re
import shutil
import subprocess
from contextlib import contextmanager
from pathlib import Path

import pytest

import train as train_module
from data import prepare as prepare_module
from data.config import DataConfig
from data.shards import ShardWriter
from runtime import checkpoint, files
from runtime.checkpoint import load_checkpoint
from runtime.config import compose
from runtime.files import AppendFile, DiskFullError, disk_full, size_text, writing
from tests.conftest import copy_tinyshakespeare
from tests.helpers import copy_run, fingerprint, run_command, tiny_model, train_once
from training import validator

TINY = ["model=tiny", "max_steps=4", "batch_size=2", "eval_batches=1", "eval_interval=2", "log_interval=1",
        "compile=false", "suggest_cpu_recipe=false", "progress=false"]
TORCH_SAYS = "[enforce fail at inline_container.cc:672] . unexpected pos 94592 vs 94480"  # the error
UNITS = {"bytes": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}


def enospc() -> OSError:
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def sizes_in(line: str) -> tuple[float, float]:
    """(needed, free) in bytes, read back from a DiskFullError's line."""
    m = re.search(r"needs (?:about|more than) ([\d.]+) (\w+), ([\d.]+) (\w+) are free \(df\)", line)
    assert m, line
    return float(m[1]) * UNITS[m[2]], float(m[3]) * UNITS[m[4]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tinyshakespeare) -> Path:
    """A tiny run of 4 steps (checkpoints at steps 2 and 4), trained once; each test resumes a copy."""
    return train_once(tmp_path_factory, tinyshakespeare, TINY)


@pytest.fixture
def run(trained, tmp_path) -> Path:
    return copy_run(trained, tmp_path)


def resume_fails(run: Path, capsys) -> str:
    """`python train.py resume=RUN max_steps=8`, in this process: it must exit with code 2 and one line,
    `error: ...`, on stderr, with no traceback. Returns that line."""
    capsys.readouterr()
    with pytest.raises(SystemExit) as stopped:
        train_module.main([f"resume={run}", "max_steps=8"])
    err = capsys.readouterr().err
    assert stopped.value.code == 2 and "Traceback" not in err, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: ")
    return line


def no_partial_files(run: Path) -> None:
    left = [p.name for p in run.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".partial"))]
    assert left == []


# ---------------------------------------------------------------------------------------------
# What counts as a full disk
# ---------------------------------------------------------------------------------------------


def test_a_full_disk_is_told_from_other_failures(tmp_path):
    behind = RuntimeError(TORCH_SAYS)
    behind.__context__ = enospc()  # torch's writer checked a write that had failed with ENOSPC
    io_error = RuntimeError(TORCH_SAYS)
    io_error.__context__ = OSError(errno.EIO, "Input/output error")
    assert disk_full(enospc()) and disk_full(OSError(errno.EDQUOT, "Disk quota exceeded"))
    assert disk_full(RuntimeError(TORCH_SAYS)) and disk_full(behind)
    assert disk_full(RuntimeError("PytorchStreamWriter failed writing file data/0: file write failed"))
    assert not disk_full(io_error) and not disk_full(OSError(errno.EACCES, "Permission denied"))
    assert not disk_full(OSError("disk full")) and not disk_full(RuntimeError("a bug"))
    assert disk_full(RuntimeError("basic_ios::clear: iostream error"), needed=10, free=5)  # it cannot fit
    assert not disk_full(RuntimeError("basic_ios::clear: iostream error"), needed=5, free=10)
    assert [size_text(n) for n in (212, 53_248, 3_250_586, 5 * 1024**3)] == ["212 bytes", "52 KB", "3.1 MB", "5.0 GB"]

    with pytest.raises(DiskFullError, match=rf"^the disk holding {tmp_path} is full: saving x needs about 2.0 MB, "
                                            r"[\d.]+ \w+ are free \(df\): free some$"):
        with writing(tmp_path, "saving x", 2 * 1024**2, "free some"):
            raise RuntimeError(TORCH_SAYS)
    with pytest.raises(DiskFullError, match="your disk quota on the disk holding"):
        with writing(tmp_path, "saving x", 10, "free some"):
            raise OSError(errno.EDQUOT, "Disk quota exceeded")
    for other in (RuntimeError("a bug"), OSError(errno.EACCES, "Permission denied"), io_error):
        with pytest.raises(type(other)) as raised:
            with writing(tmp_path, "saving x", 10, "free some"):
                raise other
        assert raised.value is other  # unchanged: a bug keeps its traceback, another OSError its own line


@pytest.mark.parametrize("tied", [False, True])
def test_the_space_a_checkpoint_needs_is_known_before_it_is_written(tmp_path, tied):
    model = tiny_model(tie_weights=tied)
    state = {"model": model.state_dict(), "step": 3, "config": {"lr": 0.1}, "rng": [checkpoint.torch.get_rng_state()]}
    checkpoint.save_checkpoint(state, tmp_path / "last.pt")
    size = (tmp_path / "last.pt").stat().st_size
    assert size <= checkpoint.checkpoint_bytes(state) <= size * 1.02  # a shared weight counts once, as written


def test_an_appended_entry_is_whole_or_not_there(tmp_path, monkeypatch):
    log = AppendFile(tmp_path / "metrics.jsonl")
    log.append(b'{"step": 1}\n')
    real, calls = AppendFile._write, []

    def fills_up(self, view):
        calls.append(len(view))
        if len(calls) == 1:
            return real(self, view[:5])  # the disk takes 5 bytes...
        raise enospc()  # ...then none

    monkeypatch.setattr(AppendFile, "_write", fills_up)
    with pytest.raises(OSError):
        log.append(b'{"step": 2}\n')
    monkeypatch.undo()
    assert (tmp_path / "metrics.jsonl").read_bytes() == b'{"step": 1}\n'  # the 5 bytes are gone again
    log.append(b'{"step": 3}\n')
    log.close()
    assert (tmp_path / "metrics.jsonl").read_bytes() == b'{"step": 1}\n{"step": 3}\n'


# ---------------------------------------------------------------------------------------------
# By injection: each thing a run writes
# ---------------------------------------------------------------------------------------------


def half_a_zip_then(error: BaseException):
    def save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04" + bytes(1000))  # some bytes reach the temporary file, then the disk is full
        raise error
    return save


def torch_error_over_enospc() -> RuntimeError:
    try:
        try:
            raise enospc()
        except OSError:
            raise RuntimeError(TORCH_SAYS)
    except RuntimeError as e:
        return e


@pytest.mark.parametrize("error", [enospc(), OSError(errno.EDQUOT, "Disk quota exceeded"), RuntimeError(TORCH_SAYS),
                                   torch_error_over_enospc()], ids=["ENOSPC", "EDQUOT", "torch", "torch-over-ENOSPC"])
def test_a_checkpoint_that_does_not_fit_is_one_line_and_the_previous_one_stays(run, capsys, monkeypatch, error):
    before = {name: (run / "checkpoints" / name).read_bytes() for name in ("last.pt", "best.pt")}
    monkeypatch.setattr(checkpoint.torch, "save", half_a_zip_then(error))
    line = resume_fails(run, capsys)
    where = "your disk quota on the disk holding" if files.refused_errno(error) == errno.EDQUOT else "the disk holding"
    assert line.startswith(f"error: {where} {run / 'checkpoints'}")
    assert "saving the checkpoint of step 6 needs about" in line and "the previous checkpoint is intact" in line
    assert f"train.py resume={run}" in line  # how to go on
    needed, _ = sizes_in(line)
    assert needed >= len(before["last.pt"]) * 0.95  # about a checkpoint's size (the message rounds)
    assert {name: (run / "checkpoints" / name).read_bytes() for name in before} == before
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
    assert sorted(os.listdir(run / "checkpoints")) == ["best.pt", "last.pt"]
    no_partial_files(run)
    assert (run / "train.log").read_text().splitlines()[-1].endswith(line)  # the run's log says why it stopped


def test_a_checkpoint_error_that_is_not_a_full_disk_is_not_called_one(run, monkeypatch):
    before = (run / "checkpoints" / "last.pt").read_bytes()
    monkeypatch.setattr(checkpoint.torch, "save", half_a_zip_then(RuntimeError("a bug in pickling")))
    overrides = [f"resume={run}", "max_steps=8"]
    with pytest.raises(RuntimeError, match="^a bug in pickling$"):  # a bug: Python's traceback, unchanged
        train_module.train(compose("train", train_module.TrainConfig, overrides), overrides)
    assert (run / "checkpoints" / "last.pt").read_bytes() == before
    no_partial_files(run)


@pytest.mark.parametrize("name", ["metrics.jsonl", "train.log"])
def test_a_log_line_that_does_not_fit_is_one_line_and_no_half_line_is_left(run, capsys, monkeypatch, name):
    before = {p: (run / p).read_bytes() for p in ("metrics.jsonl", "train.log", "checkpoints/last.pt")}
    real = AppendFile._write

    def fills_up(self, view):
        if self.path.name != name:
            return real(self, view)
        real(self, view[: len(view) // 2])  # half the line reaches the file, then the disk is full
        raise enospc()

    monkeypatch.setattr(AppendFile, "_write", fills_up)
    line = resume_fails(run, capsys)
    assert line.startswith(f"error: the disk holding {run} is full: writing {name} needs about ")
    assert line.endswith("the last checkpoint is intact")
    after = (run / name).read_bytes()
    assert after.startswith(before[name]) and after.endswith(b"\n")  # nothing lost, no half line
    if name == "metrics.jsonl":
        assert after == before[name]  # the first entry of the resumed run (step 5) was the one refused
    assert (run / "checkpoints/last.pt").read_bytes() == before["checkpoints/last.pt"]
    no_partial_files(run)


def test_a_picture_that_does_not_fit_is_one_line_after_the_checkpoint(run, capsys, monkeypatch):
    picture = (run / "loss.png").read_bytes()

    def fills_up(runs, path, title):
        Path(path).write_bytes(picture[:1000])  # half a PNG, then the disk is full
        raise enospc()

    monkeypatch.setattr(validator, "plot_losses", fills_up)
    line = resume_fails(run, capsys)
    assert line.startswith(f"error: the disk holding {run} is full: drawing loss.png needs about ")
    assert sizes_in(line)[0] >= len(picture) * 0.95 and line.endswith("its checkpoint of step 6 is intact")
    assert (run / "loss.png").read_bytes() == picture  # the previous picture, whole
    assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 6  # saved just before the picture
    no_partial_files(run)


def test_shards_that_do_not_fit_leave_the_prepared_dataset_as_it_was(tmp_path, monkeypatch, tinyshakespeare):
    root = copy_tinyshakespeare(tmp_path / "data")
    prepared = prepare_module.prepare(DataConfig(root=str(root)))
    before = fingerprint(prepared)
    real = ShardWriter.append

    def fills_up(self, ids):
        real(self, ids[: len(ids) // 2])
        raise enospc()

    monkeypatch.setattr(ShardWriter, "append", fills_up)
    with pytest.raises(DiskFullError) as refused:
        prepare_module.prepare(DataConfig(root=str(root), shard_tokens=300_000))  # another layout: prepared again
    message = str(refused.value)
    assert message.startswith(f"the disk holding {prepared} is full: preparing its token shards needs more than ")
    assert message.endswith("and prepare again; nothing prepared before was changed")
    assert fingerprint(prepared) == before
    assert sorted(p.name for p in root.iterdir() if ".partial" in p.name) == []


# ---------------------------------------------------------------------------------------------
# On a real small disk: a tmpfs, where the machine lets the test mount one (root in a container)
# ---------------------------------------------------------------------------------------------


@contextmanager
def small_disk(folder: Path, size: int):
    """folder as a tmpfs of about `size` bytes for the body; skips the test where no mount is allowed."""
    folder.mkdir(parents=True)
    if shutil.which("mount") is None or shutil.which("umount") is None:
        pytest.skip("no mount command here: the real full disk is not tried")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size // 1024 + 1}k", "tmpfs", str(folder)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"this machine lets no test mount a tmpfs ({r.stderr.strip() or r.returncode}): the real full "
                    "disk is not tried")
    try:
        yield folder
    finally:
        if subprocess.run(["umount", str(folder)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def last_line_of(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    return r.stderr.strip().splitlines()[-1]


def test_a_real_full_disk_while_saving_is_one_line_and_keeps_last_pt(trained, tmp_path):
    checkpoint_size = (trained / "checkpoints" / "last.pt").stat().st_size
    run_size = sum(p.stat().st_size for p in trained.rglob("*") if p.is_file())
    with small_disk(tmp_path / "small", run_size + checkpoint_size + 2**20) as disk:
        run = disk / "run"
        shutil.copytree(trained, run)
        before = (run / "checkpoints" / "last.pt").read_bytes()
        room = shutil.disk_usage(disk).free - checkpoint_size // 2  # leave half a checkpoint free
        (disk / "filler").write_bytes(bytes(room))
        r = run_command("train.py", f"resume={run}", "max_steps=8", timeout=600)
        line = last_line_of(r)
        assert line.startswith(f"error: the disk holding {run / 'checkpoints'} is full: saving the checkpoint of "
                               "step 6 needs about ")
        needed, free = sizes_in(line)
        assert needed >= checkpoint_size * 0.95 and free < needed
        assert (run / "checkpoints" / "last.pt").read_bytes() == before
        assert load_checkpoint(run / "checkpoints" / "last.pt")["step"] == 4
        assert sorted(os.listdir(run / "checkpoints")) == ["best.pt", "last.pt"]
        no_partial_files(run)
        assert all(line.endswith("}") for line in (run / "metrics.jsonl").read_text().splitlines())


def test_a_real_full_disk_while_preparing_is_one_line_and_leaves_nothing(tmp_path, tinyshakespeare):
    source = tinyshakespeare.stat().st_size  # 1.1 MB of characters: 2.2 MB of uint16 tokens
    with small_disk(tmp_path / "small", source + 2**20) as disk:
        copy_tinyshakespeare(disk)
        r = run_command("-m", "data.prepare", f"data.root={disk}", timeout=600)
        line = last_line_of(r)
        assert line.startswith(f"error: the disk holding {disk / 'shakespeare_char'} is full: preparing its token "
                               "shards needs more than ")
        needed, free = sizes_in(line)
        assert free <= needed * 1.05  # what was written before it filled up is about all the room there is
        assert sorted(p.name for p in disk.iterdir()) == ["tinyshakespeare"]  # no partial folder, no lock file
        assert shutil.disk_usage(disk).free >= free * 0.95  # the partial shards are gone, and their space with them
