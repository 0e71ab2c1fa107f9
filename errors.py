"""The error a user sees as one line (stdlib only, so that the tokenizer and data modules can raise
it without importing torch): every script's main prints it and exits 2, never with a traceback."""


class UserError(ValueError):
    """Bad input from the user (a flag, a file, a busy out_dir)."""


class CheckpointError(UserError):
    """A missing, unreadable, incomplete or unfitting checkpoint."""
