"""User errors: one exception type, and one place that turns it into one line and exit code 2."""

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
    """Run the body; a UserError becomes `error: <message>` on stderr and exit code 2, no traceback."""
    try:
        yield
    except UserError as e:
        sys.stdout.flush()
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
