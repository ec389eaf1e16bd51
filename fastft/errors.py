"""Errors a user can cause. The CLI prints them as one clear message and exits with code 2."""


class FastftError(Exception):
    """What went wrong, where, and how to fix it."""

    exit_code = 2

    def __init__(self, message: str, where: str = "", hint: str = ""):
        super().__init__(message)
        self.message = message
        self.where = where
        self.hint = hint

    def __str__(self) -> str:
        text = f"{self.where}: {self.message}" if self.where else self.message
        return f"{text}\n  fix: {self.hint}" if self.hint else text
