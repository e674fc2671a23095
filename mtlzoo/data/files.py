"""Checksum verification for the file-based dataset readers.

Checksum files use the ``sha256sum``/``md5sum`` format: one ``HEXDIGEST  filename`` line per
file (``HEXDIGEST *filename`` in binary mode).  A listed ``name`` that is absent but has a
``name.gz`` beside it is checked by hashing the gunzipped content, which is how the
``*.uncompressed`` sums of the MNIST and Fashion-MNIST folders are meant.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import zlib

from mtlzoo.errors import DataIntegrityError

CHUNK_SIZE = 1 << 20

_LINE = re.compile(r"^(?P<digest>[0-9A-Fa-f]+) [ *](?P<name>.+)$")
_SUMS_ALGORITHMS = {"SHA256SUMS": "sha256", "SHA1SUMS": "sha1", "SHA512SUMS": "sha512", "MD5SUMS": "md5"}




def file_digest(path: str | os.PathLike, algorithm: str = "sha256", *, gunzip: bool = False,
                chunk_size: int = CHUNK_SIZE) -> str:
    """Hex digest of a file, read in chunks; of its decompressed content if ``gunzip``."""
    hasher = _new_hasher(algorithm)
    opener = gzip.open if gunzip else open
    try:
        with opener(path, "rb") as f:
            while chunk := f.read(chunk_size):
                hasher.update(chunk)
    except (gzip.BadGzipFile, EOFError, zlib.error) as err:  # a damaged or truncated .gz
        raise DataIntegrityError(f"Cannot read {os.fspath(path)!r}: {err}", path=os.fspath(path)) from err
    return hasher.hexdigest()


def parse_checksums(path: str | os.PathLike) -> dict[str, str]:
    """``{filename: lower-case hex digest}`` from a ``sha256sum``-style file."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Checksum file {path!r} does not exist.")
    sums: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            line = line.rstrip("\r\n")
            if not line.strip() or line.lstrip().startswith("#"):
                continue
            match = _LINE.match(line)
            if not match:
                raise DataIntegrityError(
                    f"{path}:{lineno}: expected 'HEXDIGEST  filename', got {line!r}.", path=path
                )
            name = match["name"]
            if name in sums:
                raise DataIntegrityError(f"{path}:{lineno}: {name!r} is listed twice.", path=path)
            sums[name] = match["digest"].lower()
    if not sums:
        raise DataIntegrityError(f"Checksum file {path!r} lists no files.", path=path)
    return sums


def verify_file(path: str | os.PathLike, expected: str, algorithm: str = "sha256", *,
                gunzip: bool = False) -> None:
    """Check one file against a known hex digest (of its gunzipped content if ``gunzip``)."""
    path = os.fspath(path)
    expected = expected.lower()
    length = _new_hasher(algorithm).digest_size * 2
    if len(expected) != length:
        raise DataIntegrityError(
            f"Expected {algorithm} digest for {path!r} has {len(expected)} hex digits, not {length}: "
            f"{expected!r} (wrong algorithm?).",
            path=path,
        )
    if not os.path.isfile(path):
        raise FileNotFoundError(f"Data file {path!r} does not exist.")
    actual = file_digest(path, algorithm, gunzip=gunzip)
    if actual != expected:
        what = "gunzipped content of " if gunzip else ""
        raise DataIntegrityError(
            f"{algorithm} mismatch for {what}{path!r}: expected {expected}, got {actual}. "
            "The file is corrupt or not the expected version; replace it.",
            path=path,
            expected=expected,
            actual=actual,
        )


def verify_checksums(directory: str | os.PathLike, sums_filename: str, algorithm: str | None = None, *,
                     allow_gzip: bool = True) -> dict[str, str]:
    """Verify every file listed in ``directory/sums_filename``.

    Args:
        directory: folder holding the data files and the checksum file.
        sums_filename: e.g. ``"SHA256SUMS"`` or ``"MD5SUMS.uncompressed"``.
        algorithm: a ``hashlib`` name; inferred from the file name (``SHA256SUMS*`` -> sha256,
            ``MD5SUMS*`` -> md5) when None.
        allow_gzip: check a listed ``name`` that is missing against the gunzipped ``name.gz``.

    Returns:
        ``{listed name: path of the file that was verified}`` (``name`` or ``name.gz``).

    Raises:
        FileNotFoundError: the directory, the checksum file or a listed file is missing.
        DataIntegrityError: a malformed checksum file or a digest mismatch.
    """
    directory = os.fspath(directory)
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"Data directory {directory!r} does not exist.")
    if algorithm is None:
        algorithm = _SUMS_ALGORITHMS.get(sums_filename.split(".")[0])
        if algorithm is None:
            raise ValueError(
                f"Cannot infer the hash algorithm from {sums_filename!r}; pass algorithm "
                f"(file names known: {sorted(_SUMS_ALGORITHMS)})."
            )
    sums = parse_checksums(os.path.join(directory, sums_filename))
    verified = {}
    for name, expected in sums.items():
        path = os.path.join(directory, name)
        gunzip = False
        if not os.path.isfile(path) and allow_gzip and os.path.isfile(path + ".gz"):
            path, gunzip = path + ".gz", True
        if not os.path.isfile(path):
            also = f" (nor {name}.gz)" if allow_gzip else ""
            raise FileNotFoundError(
                f"{name!r}{also}, listed in {sums_filename}, is missing from {directory!r}."
            )
        verify_file(path, expected, algorithm, gunzip=gunzip)
        verified[name] = path
    return verified


def _new_hasher(algorithm: str):
    try:
        return hashlib.new(algorithm)
    except (ValueError, TypeError):
        raise ValueError(
            f"Unknown hash algorithm {algorithm!r}; expected a hashlib name such as 'sha256' or 'md5'."
        ) from None
