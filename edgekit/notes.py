"""Notes on artifacts and reports, each marked for its reader.

A note is a ``str`` (so every list of notes, manifest and JSON report keeps working) that
carries ``detail``: ``False`` for what every user should read (int8 inputs and outputs, NHWC
inputs, a parity failure), ``True`` for internals that only ``--verbose`` shows (what the
flatbuffer passes removed, how weights were rounded). The producer decides, where it knows
what the note means; renderers never guess from the text.
"""

from __future__ import annotations

from typing import Iterable


class Note(str):
    """A note's text plus ``detail`` (shown only with ``--verbose`` when True)."""

    detail: bool

    def __new__(cls, text: str, *, detail: bool = False) -> "Note":
        note = super().__new__(cls, text)
        note.detail = detail
        return note

    def __reduce__(self):  # type: ignore[override]  # keeps ``detail`` through copy/pickle
        return (_rebuild, (str(self), self.detail))


def _rebuild(text: str, detail: bool) -> Note:
    return Note(text, detail=detail)


def detail(text: str) -> Note:
    """A note only ``--verbose`` shows (converter internals and the like)."""
    return Note(text, detail=True)


def is_detail(note: str) -> bool:
    """True for a note marked with :func:`detail`; a plain ``str`` is for every reader."""
    return bool(getattr(note, "detail", False))


def split_notes(notes: Iterable[str]) -> tuple[list[str], list[str]]:
    """(notes for every reader, detail notes) as plain strings, in order."""
    shown: list[str] = []
    details: list[str] = []
    for note in notes:
        (details if is_detail(note) else shown).append(str(note))
    return shown, details


__all__ = ["Note", "detail", "is_detail", "split_notes"]
