"""The error type for what the user passed (the CLI turns it into exit code 2)."""


class InputError(ValueError):
    """A problem with what the user passed: the message says what is wrong and what to do."""
