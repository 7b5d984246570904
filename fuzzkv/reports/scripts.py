"""Where reproduction scripts are saved: one file per failure, never pasted into the terminal.

The folder is the one the user sets (``fuzzkv run --repro-dir``, the pytest plugin's ``--fuzzkv-repro-dir``,
``Result.raise_for_findings(repro_dir=...)``), else ``fuzzkv-repro/`` beside the SQLite database file (``fuzzkv.db``
in the current folder by default, so ``./fuzzkv-repro/``), else (an in-memory or PostgreSQL store)
``./fuzzkv-repro/`` in the current folder. A failure stored in a database file is saved as ``failure-<id>.py``
(``fuzzkv show <id> --script`` prints the same script); one kept only in memory, whose id means nothing after the
run, as ``<oracle>-<fingerprint>.py``. Each script runs as it is: ``python fuzzkv-repro/failure-1.py`` exits 1
while the bug is there.
"""

from __future__ import annotations

from pathlib import Path

from fuzzkv import events

FOLDER = "fuzzkv-repro"


def default_folder(db_url: str | None) -> Path:
    """``fuzzkv-repro`` beside a SQLite database file, else in the current folder."""
    if db_url and db_url.startswith("sqlite:///"):
        return Path(db_url.removeprefix("sqlite:///")).parent / FOLDER
    return Path(FOLDER)


def persistent(db_url: str | None) -> bool:
    """Whether the store outlives the run (its ids name failures for ``fuzzkv show``)."""
    return bool(db_url) and not str(db_url).startswith("memory:")


def file_name(*, stored_id: int | None, oracle: str, fingerprint: str, by_id: bool) -> str:
    if by_id and stored_id is not None:
        return f"failure-{stored_id}.py"
    return f"{oracle}-{fingerprint}.py"


class RunScripts:
    """Where one run's reproduction scripts go and how they are named, for every reporter that saves them (each writes
    the same file): the folder given, else the default for the run's store, learnt from its ``RunStarted``."""

    def __init__(self, folder: str | Path | None = None):
        self.folder = Path(folder) if folder is not None else None
        self.by_id = True

    def started(self, settings: dict) -> None:
        db_url = settings.get("db_url")
        self.folder = self.folder or default_folder(db_url)
        self.by_id = persistent(db_url)

    def save(self, found: events.FailureFound) -> Path | None:
        """The failure's script saved (None where it has none); raises OSError where the folder cannot be written."""
        return save_failure(self.folder or default_folder(None), found, by_id=self.by_id)


def save_failure(folder: Path, found: events.FailureFound, *, by_id: bool) -> Path | None:
    """Save a run's failure as its reporters name it (each reporter writes the same file, once it has the event);
    None where it has no script. Raises OSError where the folder cannot be written."""
    if not found.reproduction:
        return None
    name = file_name(stored_id=found.stored_id, oracle=found.verdict.oracle, fingerprint=found.fingerprint, by_id=by_id)
    return save(folder, name, found.reproduction)


def save(folder: Path, name: str, script: str) -> Path:
    """Write ``script`` as ``folder/name`` (the folder made as needed); returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(script.rstrip() + "\n", encoding="utf-8")  # as 'fuzzkv show ID --script' prints it
    return path
