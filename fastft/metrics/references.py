"""Pairing predictions with their references, shared by every metric."""
from ..errors import FastftError


def check_paired(predictions: list, references: list) -> None:
    if not predictions or len(predictions) != len(references):
        raise FastftError(f"cannot score {len(predictions)} predictions against {len(references)} references",
                          hint="give one prediction per example, in the same order as its references")


def reference_lists(predictions: list[str], references: list) -> list[list[str]]:
    """Each reference as a list of acceptable strings (a plain string is a list of one)."""
    check_paired(predictions, references)
    lists = [[r] if isinstance(r, str) else list(r) for r in references]
    if any(not refs for refs in lists):
        raise FastftError("an example has an empty list of references", hint="give each prediction at least one reference")
    return lists
