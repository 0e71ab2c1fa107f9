"""The one-line errors a user sees, stdlib only (the data module and experiments.py take them without
importing torch): a UserError, which every script's main prints as one line and exits 2 on, never a
traceback; and the flag parser that reports a bad flag the same way."""

import argparse


class UserError(ValueError):
    """Bad input from the user (a flag, a file, a busy out_dir)."""


class CheckpointError(UserError):
    """A missing, unreadable, incomplete or unfitting checkpoint."""


class Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line, not a usage dump (exit 2)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")
