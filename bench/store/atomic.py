"""Files written whole or not at all, for every report and study writer.

A file is written to a temporary file in the same folder, flushed to disk, then renamed over its name:
a reader sees the old file or the new one, never half of one, and a full disk or a read-only folder
leaves the earlier file (or none) in place, never a 0-byte one. Appends (results.jsonl, scaling.jsonl)
go in as one write and are cut back to the old length when the write fails, so no half line stays.

A write that fails raises WriteError (an OSError whose message names the file and the reason); the CLI
prints it and exits with status 1.
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from pathlib import Path


class WriteError(OSError):
    """A file or folder could not be written: its path and the reason, as one sentence."""


def _reason(error: OSError) -> str:
    return error.strerror or str(error)


def _write(descriptor: int, data: memoryview) -> int:
    """One os.write; the one place bytes reach a file (tests make it fail as a full disk would)."""
    return os.write(descriptor, data)


def _write_all(descriptor: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[_write(descriptor, view) :]
    os.fsync(descriptor)


def ensure_dir(path: Path) -> Path:
    """`path` as a folder that exists (created with its parents); WriteError if it cannot be."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise WriteError(f"cannot write into {path}: it exists and is not a folder")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise WriteError(f"cannot create the folder {path}: {_reason(error)}") from None
    return path


def write_bytes(path: Path, data: bytes) -> Path:
    """Write `data` to `path` atomically (temporary file in the same folder, fsync, rename)."""
    path = Path(path)
    if path.is_dir():
        raise WriteError(f"cannot write {path}: it is a folder; give a file name")
    temp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
    try:
        descriptor = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    except OSError as error:
        raise WriteError(f"cannot write {path}: {_reason(error)}") from None
    try:
        try:
            _write_all(descriptor, data)
        finally:
            os.close(descriptor)
        os.replace(temp, path)
    except OSError as error:
        try:
            temp.unlink()
        except OSError:
            pass
        raise WriteError(f"cannot write {path}: {_reason(error)}; it was left as it was") from None
    _sync_folder(path.parent)
    return path


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable where the platform allows it (best effort)."""
    try:
        descriptor = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


def write_text(path: Path, text: str) -> Path:
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: Path, data, indent: int | None = 2) -> Path:
    return write_text(path, json.dumps(data, indent=indent) + "\n")


def write_csv(path: Path, header: list, rows) -> Path:
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(header)
    writer.writerows(rows)
    return write_text(path, buffer.getvalue())


def save_figure(fig, path: Path, **options) -> Path:
    """A matplotlib figure rendered in memory, then written atomically (the format from the suffix)."""
    path = Path(path)
    buffer = io.BytesIO()
    fig.savefig(buffer, format=path.suffix.lstrip(".") or "png", **options)
    return write_bytes(path, buffer.getvalue())


def append_bytes(path: Path, data: bytes) -> None:
    """Append `data` with one write and fsync; when the write fails, the file is cut back to its old
    length (no half line), or removed if this append created it (no 0-byte file), and the OSError is
    raised for the caller to explain."""
    existed = os.path.lexists(path)
    descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(descriptor).st_size
        try:
            _write_all(descriptor, data)
        except OSError:
            try:
                if existed:
                    os.ftruncate(descriptor, size)
                else:
                    os.unlink(path)
            except OSError:
                pass
            raise
    finally:
        os.close(descriptor)
