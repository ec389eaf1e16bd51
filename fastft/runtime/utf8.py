"""fastft reads recipes and data files as UTF-8 (a UTF-8 byte-order mark is fine); this says why a file is not."""
import codecs
from pathlib import Path

HEAD_BYTES = 1 << 16
_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"),
         (codecs.BOM_UTF16_LE, "UTF-16"), (codecs.BOM_UTF16_BE, "UTF-16"))


def utf8_problem(raw: bytes, complete: bool = True) -> str | None:
    """Why `raw` is not UTF-8 text, or None. With complete=False `raw` is a file's head, which may end mid-character."""
    # UTF-32-LE's mark begins with UTF-16-LE's, so the longer marks are tried first.
    encoding = next((name for bom, name in _BOMS if raw.startswith(bom)), None)
    if encoding:
        return f"is {encoding} text"
    # Valid UTF-8 never has NUL in text files; UTF-16 without a byte-order mark and binary files do.
    if b"\x00" in raw:
        return f"holds NUL bytes (byte {raw.index(0)}): a binary file, or UTF-16 without a byte-order mark?"
    try:
        codecs.getincrementaldecoder("utf-8")().decode(raw, final=complete)
    except UnicodeDecodeError as exc:
        return not_utf8(exc)
    return None


def not_utf8(exc: UnicodeDecodeError) -> str:
    return f"is not UTF-8 text (byte {exc.start}: {exc.reason})"


def file_head_problem(path: Path) -> str | None:
    """utf8_problem for the first HEAD_BYTES of a file (what a data file's format check reads first)."""
    with path.open("rb") as f:
        head = f.read(HEAD_BYTES)
    return utf8_problem(head, complete=len(head) < HEAD_BYTES)
