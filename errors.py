"""The one-line errors a user sees, stdlib only (the data module and experiments.py take them without
importing torch): a UserError, which every script's main prints as one line and exits 2 on, never a
traceback (run_main, the one main of every script); and the flag parser that reports a bad flag the
same way."""

import argparse
import os
import sys
from collections.abc import Callable


class UserError(ValueError):
    """Bad input from the user (a flag, a file, a busy out_dir)."""


class CheckpointError(UserError):
    """A missing, unreadable, incomplete or unfitting checkpoint."""


class WriteError(UserError):
    """A checkpoint, log or export that could not be written (disk full, no permission): one line
    too, but exit 1, since the input was fine."""
    exit_code = 1


def run_main(prog: str, body: Callable[[], int]) -> int:
    """Every script's main: body's exit code, or a UserError as one line on stderr ("prog: error:
    ...") and exit 2 (1 for a WriteError), printed after any progress bar has closed (the error
    leaves the bar's `with` block first). Under torchrun only rank 0 prints: the errors the scripts
    raise there are the same on every process (flags, data) or agreed between them (the out_dir
    lock, checkpoint writes), so its line is the line. Ctrl-C outside a training loop (which saves
    on it instead) is exit 130 and one line, not a traceback."""
    try:
        return body()
    except UserError as e:
        if os.environ.get("RANK", "0") == "0":
            print(f"{prog}: error: {e}", file=sys.stderr)
        return getattr(e, "exit_code", 2)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    finally:  # a DDP run's process group (only a script that imported torch can have one)
        dist = sys.modules.get("torch.distributed")
        if dist is not None and dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, not a usage dump (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")
