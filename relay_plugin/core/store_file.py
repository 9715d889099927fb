"""Opening the store's SQLite file safely: private modes, and checks that never write.

A file that fails a check is left as it is: its bytes and modification time do not change, so a
user can still restore or inspect it. For a file in WAL mode SQLite may create empty -wal and -shm
files beside it during the read-only check.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import stat
from pathlib import Path

from relay_plugin.core.protocol import excerpt
from relay_plugin.errors import StoreCorruptError, StoreError, StoreVersionError

logger = logging.getLogger(__name__)

APPLICATION_ID = 0x524C5950  # "RLYP" in the SQLite header marks the file as a relay-plugin store
BUSY_TIMEOUT_S = 10.0
MOVE_ASIDE = (
    "move it (with its -wal and -shm files) aside or restore a backup; relay-plugin then starts "
    "with an empty store"
)
_SQLITE_MAGIC = b"SQLite format 3\x00"
_SQLITE_HEADER_BYTES = 100
_CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB
_BUSY_CODES = {5, 6}  # SQLITE_BUSY, SQLITE_LOCKED
_ACCESS_CODES = frozenset(
    {sqlite3.SQLITE_READONLY, sqlite3.SQLITE_CANTOPEN, sqlite3.SQLITE_IOERR, sqlite3.SQLITE_PERM}
)


def prepare_folder(data_dir: Path) -> None:
    """Create the data folder with mode 0700 if it is missing, or raise StoreError if unusable."""
    try:
        data_dir.mkdir(mode=0o700, parents=True)  # only the last folder gets the mode
    except FileExistsError:
        pass
    except OSError as exc:
        raise StoreError(
            str(data_dir),
            f"cannot create the data folder ({exc.strerror}); "
            "set RELAY_DATA_DIR to a folder you can write",
        ) from None
    else:
        os.chmod(data_dir, 0o700)  # mkdir's mode is reduced by the umask
    if not data_dir.is_dir():
        raise StoreError(str(data_dir), "the data folder path is not a folder; set RELAY_DATA_DIR")
    if not os.access(data_dir, os.W_OK | os.X_OK):
        raise StoreError(
            str(data_dir),
            "the data folder is not writable; fix its permissions or set RELAY_DATA_DIR "
            "to a folder you can write",
        )


def create_private_file(path: Path) -> bool:
    """Create an empty file with mode 0600, or return False if it already exists."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise StoreError(str(path), f"cannot create the file ({exc.strerror})") from None
    os.close(fd)
    return True


def check_existing(path: Path, schema_version: int) -> None:
    """Check an existing file through a read-only connection before anything writes to it.

    An empty file passes: it is a new database. Raises StoreCorruptError for a file that is not
    an intact relay-plugin store and StoreVersionError for a schema newer than ``schema_version``.
    """
    try:
        info = os.stat(path)
        with open(path, "rb") as handle:
            header = handle.read(_SQLITE_HEADER_BYTES)
    except OSError as exc:
        raise StoreError(
            str(path), f"cannot read the file ({exc.strerror}); fix its permissions"
        ) from None
    if not stat.S_ISREG(info.st_mode):
        raise StoreError(str(path), "it is not a regular file; move it aside")
    if not header:
        return
    if len(header) < _SQLITE_HEADER_BYTES or not header.startswith(_SQLITE_MAGIC):
        raise StoreCorruptError(
            str(path), f"it is not an SQLite database (bad header); {MOVE_ASIDE}"
        )
    try:
        read_only = path.absolute().as_uri() + "?mode=ro"
        conn = sqlite3.connect(read_only, uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise store_error(path, "open", exc) from exc
    try:
        _check_schema(conn, path, schema_version)
    except sqlite3.Error as exc:
        raise store_error(path, "open", exc) from exc
    finally:
        conn.close()


def _check_schema(conn: sqlite3.Connection, path: Path, schema_version: int) -> None:
    app_id = conn.execute("PRAGMA application_id").fetchone()[0]
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
    if app_id != APPLICATION_ID and (app_id or version or tables):
        raise StoreCorruptError(
            str(path), f"it is an SQLite database but not a relay-plugin store; {MOVE_ASIDE}"
        )
    if version > schema_version:
        raise newer_version_error(path, version, schema_version)
    problems = [row[0] for row in conn.execute("PRAGMA quick_check(5)")]
    if problems != ["ok"]:
        raise StoreCorruptError(
            str(path), f"the integrity check failed ({excerpt('; '.join(problems))}); {MOVE_ASIDE}"
        )


def newer_version_error(path: Path, version: int, supported: int) -> StoreVersionError:
    """Build the error for a file whose schema is newer than this program reads."""
    return StoreVersionError(
        str(path),
        f"schema version {version} was written by a newer relay-plugin (this one reads up to "
        f"{supported}); upgrade relay-plugin",
    )


def restrict_modes(path: Path) -> None:
    """Make the file and its -wal and -shm files private (0600) if they are readable by others."""
    for suffix in ("", "-wal", "-shm"):
        member = path.with_name(path.name + suffix)
        try:
            mode = stat.S_IMODE(os.stat(member).st_mode)
            if mode & 0o077:
                os.chmod(member, mode & 0o600)
                logger.warning("%s was readable by others; changed its mode to 0600", member)
        except FileNotFoundError:
            continue


def store_error(path: Path, action: str, exc: sqlite3.Error) -> StoreError:
    """Translate an sqlite3 error into a StoreError that names the fix."""
    code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
    if code in _CORRUPT_CODES:
        return StoreCorruptError(str(path), f"{action} failed: {exc}; {MOVE_ASIDE}")
    if code in _BUSY_CODES:
        return StoreError(
            str(path),
            f"{action} failed: the database stayed locked for {BUSY_TIMEOUT_S:g} s by another "
            "process; try again",
        )
    if code == sqlite3.SQLITE_FULL:
        return StoreError(
            str(path),
            f"{action} failed: the disk is full ({exc}); free space in {path.parent} and try "
            "again. Nothing was changed.",
        )
    if code in _ACCESS_CODES:
        return StoreError(
            str(path),
            f"{action} failed: {path.parent} is not writable ({exc}); check the folder's "
            "permissions, mount options and free space, then try again. Nothing was changed.",
        )
    return StoreError(str(path), f"{action} failed: {exc}")
