"""User errors: one exception type, and one place that turns it into one line and exit code 2."""

import os
import sys
from contextlib import contextmanager
from typing import Iterator


class UserError(Exception):
    """Something the user can fix: a bad setting, a missing file, a foreign checkpoint.

    The message says what is wrong and what to do. Each part of ropegpt raises its own subclass
    (DataError, CheckpointError, DeviceError, TrainError, SampleError), all handled the same way.
    """


@contextmanager
def exit_on_user_error() -> Iterator[None]:
    """Run the body; a UserError becomes `error: <message>` on stderr and exit code 2, no traceback.

    So does an OSError that reaches here (a full disk, a path through a file, no permission): the
    machine, not ropegpt, refused, and the user is the one who can fix it. Anything else is a bug and
    keeps Python's traceback.
    """
    try:
        yield
    except UserError as e:
        fail(str(e))
    except OSError as e:
        fail(f"{e.strerror or e}: {e.filename}" if e.filename else f"{e.strerror or e}")


def fail(message: str) -> None:
    if int(os.environ.get("RANK", "0")) == 0:  # under torchrun every process stops; one says why
        print(f"error: {message}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    if "torch.distributed" in sys.modules and sys.modules["torch.distributed"].is_initialized():
        # A process group that a failed setup left behind: tearing it down may wait on peers that have
        # stopped too. Every file is closed already; leave at once.
        os._exit(2)
    sys.exit(2)
