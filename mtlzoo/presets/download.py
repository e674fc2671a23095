"""Fetching a preset archive from a URL: verified, bounded, unpacked atomically into the cache.

A download is bounded (``DownloadLimits``; each bound can be raised with its environment
variable or by passing ``limits=`` to ``load``/``resolve``):

    MTLZOO_DOWNLOAD_TIMEOUT       seconds for the whole download, not per read (default 600)
    MTLZOO_MAX_DOWNLOAD_BYTES     size of the archive (default 2 GiB)
    MTLZOO_MAX_UNPACKED_BYTES     sum of the archive's member sizes (default 8 GiB)
    MTLZOO_MAX_ARCHIVE_MEMBERS    number of members (default 1000)

Every member is checked before anything is unpacked: only directories and regular files, all
inside the preset's folder. A URL that breaks any of this is a ``PresetError`` and leaves
nothing behind in the cache.
"""

from __future__ import annotations

import dataclasses
import http.client
import os
import re
import shutil
import socket
import tarfile
import tempfile
import threading
import time
import urllib.request
import zlib
from pathlib import Path
from typing import Mapping

from mtlzoo.data.files import file_digest
from mtlzoo.errors import PresetError, one_line
from mtlzoo.validation import is_number

# The files of a preset directory (see ``mtlzoo.presets.store``), checked in every download.
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"

GIB = 1 << 30


@dataclasses.dataclass(frozen=True)
class DownloadLimits:
    """Bounds on fetching a preset URL, so that no server can hold the caller or fill its disk.

    ``DownloadLimits.from_env()``, what ``load`` uses unless given ``limits=``, takes each field
    from its environment variable (``DownloadLimits.ENV``) where that is set and not empty.
    """

    timeout: float = 600.0  # seconds for the whole download
    max_download_bytes: int = 2 * GIB
    max_unpacked_bytes: int = 8 * GIB  # the sum of the member sizes
    max_members: int = 1000  # a preset is three files

    ENV = {"timeout": "MTLZOO_DOWNLOAD_TIMEOUT", "max_download_bytes": "MTLZOO_MAX_DOWNLOAD_BYTES",
           "max_unpacked_bytes": "MTLZOO_MAX_UNPACKED_BYTES", "max_members": "MTLZOO_MAX_ARCHIVE_MEMBERS"}

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not is_number(value) or value <= 0:
                raise PresetError(f"DownloadLimits.{field.name} must be a number > 0, got {value!r}.")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "DownloadLimits":
        environ = os.environ if environ is None else environ
        values = {}
        for field in dataclasses.fields(cls):
            name, text = cls.ENV[field.name], environ.get(cls.ENV[field.name], "").strip()
            if not text:
                continue
            whole = isinstance(field.default, int)
            try:
                value = int(text) if whole else float(text)
            except ValueError:
                value = None
            if value is None or not is_number(value) or value <= 0:
                kind = "a whole number" if whole else "a number of seconds"
                raise PresetError(f"{name}={text!r} is not valid: expected {kind} > 0.")
            values[field.name] = value
        return cls(**values)

    def hint(self, field: str) -> str:
        """Where the limit ``field`` comes from and how to raise it, for error messages."""
        return (f"the limit {self.ENV[field]}={getattr(self, field)}; raise it with that environment variable "
                f"or limits=DownloadLimits({field}=...)")


def cache_dir() -> Path:
    return Path(os.environ.get("MTLZOO_CACHE", Path.home() / ".cache" / "mtlzoo"))


_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")
_READ_TIMEOUT = 60.0  # one stalled read; DownloadLimits.timeout bounds the whole download
_CHUNK = 1 << 20


def fetch_url(url: str, limits: DownloadLimits) -> Path:
    """The cache folder of ``https://...tar.gz#sha256=<digest>``, downloaded and unpacked if not yet there."""
    address, _, fragment = url.partition("#")
    key, _, digest = fragment.partition("=")
    # The digest names the cache folder: anything but plain hex could point it elsewhere.
    if key != "sha256" or not _SHA256_HEX.fullmatch(digest):
        raise PresetError(f"A preset URL must end in #sha256=<64 hex digits> (the sha256 of its archive); "
                          f"got {url!r}.")
    expected = digest.lower()
    target = cache_dir() / "presets" / expected
    if (target / METADATA_FILE).is_file():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download.", dir=target.parent))
    try:
        archive = staging / "preset.tar.gz"
        _download(address, archive, limits)
        actual = file_digest(archive)
        if actual != expected:
            raise PresetError(f"The archive at {address!r} has sha256 {actual}, not the {expected} its URL names.")
        unpacked = staging / "preset"
        _unpack(archive, unpacked, address, limits)
        entries = list(unpacked.iterdir())
        root = entries[0] if len(entries) == 1 and entries[0].is_dir() else unpacked
        missing = [f for f in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE) if not (root / f).is_file()]
        if missing:
            raise PresetError(f"The archive at {address!r} holds no preset: it lacks {missing} at its top level "
                              "(or in its one top-level folder).")
        try:
            os.replace(root, target)
        except OSError as e:
            if not (target / METADATA_FILE).is_file():  # else another process unpacked it meanwhile
                raise PresetError(f"Cannot move the preset from {address!r} into {str(target)!r}: {e}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def _download(address: str, archive: Path, limits: DownloadLimits) -> None:
    """Write the body at ``address`` into ``archive`` within ``limits``' deadline and byte cap."""
    watchdog = _Watchdog(limits.timeout)
    opener = urllib.request.build_opener(_WatchedHTTPHandler(watchdog), _WatchedHTTPSHandler(watchdog))
    declared, received = None, 0
    try:
        with watchdog, opener.open(address, timeout=min(_READ_TIMEOUT, limits.timeout)) as response, \
                open(archive, "wb") as out:
            declared = _content_length(response)
            if declared is not None and declared > limits.max_download_bytes:
                raise PresetError(f"The download of {address!r} declares {declared} bytes, more than "
                                  f"{limits.hint('max_download_bytes')}.")
            while chunk := response.read1(_CHUNK):
                received += len(chunk)
                if received > limits.max_download_bytes:
                    raise PresetError(f"The download of {address!r} is larger than "
                                      f"{limits.hint('max_download_bytes')}.")
                if watchdog.expired:
                    break
                out.write(chunk)
    except PresetError:
        raise
    except (OSError, ValueError, http.client.HTTPException) as e:
        if not watchdog.expired:
            raise PresetError(f"Cannot download the preset {address!r}: {one_line(e)}") from None
    if watchdog.expired:
        raise PresetError(f"The download of {address!r} did not finish within {limits.hint('timeout')}.")
    if declared is not None and received < declared:
        raise PresetError(f"The download of {address!r} ended after {received} of its {declared} bytes.")


def _content_length(response) -> int | None:
    try:
        length = int(response.headers.get("Content-Length", ""))
    except ValueError:
        return None
    return length if length >= 0 else None


class _Watchdog:
    """Shuts the download's sockets down at its deadline, wherever a read is blocked.

    A socket timeout only bounds each read; a server trickling a byte at a time (into the
    headers or the body) would otherwise hold the download indefinitely.
    """

    def __init__(self, seconds: float):
        self._end = time.monotonic() + seconds
        self._fired = threading.Event()
        self._mutex = threading.Lock()
        self._sockets: list[socket.socket] = []
        self._timer = threading.Timer(min(seconds, threading.TIMEOUT_MAX), self._fire)
        self._timer.daemon = True

    def __enter__(self):
        self._timer.start()
        return self

    def __exit__(self, *exc_info):
        self._timer.cancel()

    @property
    def expired(self) -> bool:
        return self._fired.is_set() or time.monotonic() >= self._end

    def watch(self, sock: socket.socket) -> None:
        with self._mutex:
            self._sockets.append(sock)
            fired = self._fired.is_set()
        if fired:
            _shutdown(sock)

    def _fire(self) -> None:
        with self._mutex:
            self._fired.set()
            sockets = list(self._sockets)
        for sock in sockets:
            _shutdown(sock)

    def connection_class(self, base: type) -> type:
        """``base`` (an http.client connection class) with its sockets watched."""
        watchdog = self

        class Watched(base):
            def connect(self):
                super().connect()
                watchdog.watch(self.sock)

        return Watched


def _shutdown(sock: socket.socket) -> None:
    try:
        # The plain socket's shutdown, also for a TLS socket: it wakes a blocked read at once.
        socket.socket.shutdown(sock, socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _WatchedHTTPHandler(urllib.request.HTTPHandler):
    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self._connection = watchdog.connection_class(http.client.HTTPConnection)

    def http_open(self, req):
        return self.do_open(self._connection, req)


class _WatchedHTTPSHandler(urllib.request.HTTPSHandler):
    def __init__(self, watchdog: _Watchdog):
        super().__init__()
        self._connection = watchdog.connection_class(http.client.HTTPSConnection)

    def https_open(self, req):
        return self.do_open(self._connection, req)


def _unpack(archive: Path, destination: Path, address: str, limits: DownloadLimits) -> None:
    """Unpack the tar ``archive`` into ``destination``, every member checked before any is written.

    Only directories and regular files are accepted: links are what path checks get wrong
    (the ``data`` filter of older Pythons included), and a preset needs none.
    """
    opened = False
    try:
        with tarfile.open(archive) as tar:
            opened = True
            members, total = [], 0
            for member in tar:  # lazily: a bomb is stopped at its first member past a limit
                members.append(member)
                total += member.size
                if len(members) > limits.max_members:
                    raise PresetError(f"The archive at {address!r} has more members than "
                                      f"{limits.hint('max_members')}.")
                if total > limits.max_unpacked_bytes:
                    raise PresetError(f"The archive at {address!r} unpacks to more than "
                                      f"{limits.hint('max_unpacked_bytes')}.")
                if member.name.startswith(("/", os.sep)):  # the filter would quietly make it relative
                    raise PresetError(f"The archive at {address!r} is unsafe to unpack: its member "
                                      f"{member.name!r} has an absolute path.")
                if not member.isdev():  # else the filter would only say "special file"
                    tarfile.data_filter(member, str(destination))
                if not (member.isreg() or member.isdir()):
                    raise PresetError(f"The archive at {address!r} is unsafe to unpack: its member "
                                      f"{member.name!r} is a {_kind(member)}; a preset archive may hold only "
                                      "directories and regular files.")
            destination.mkdir()
            tar.extractall(destination, members=members, filter="data")
    except PresetError:
        raise
    except tarfile.FilterError as e:
        raise PresetError(f"The archive at {address!r} is unsafe to unpack: {one_line(e)}.") from None
    except (tarfile.TarError, EOFError, zlib.error, OSError) as e:
        if not opened and isinstance(e, tarfile.ReadError):  # its message lists every compression tried
            raise PresetError(f"The file at {address!r} is not a .tar.gz archive, which a preset URL must "
                              "name.") from None
        raise PresetError(f"Cannot unpack the archive at {address!r}; a preset URL must name a .tar.gz: "
                          f"{type(e).__name__}: {one_line(e)}") from None


def _kind(member: tarfile.TarInfo) -> str:
    if member.issym():
        return f"symbolic link to {member.linkname!r}"
    if member.islnk():
        return f"hard link to {member.linkname!r}"
    return {tarfile.CHRTYPE: "character device", tarfile.BLKTYPE: "block device",
            tarfile.FIFOTYPE: "FIFO"}.get(member.type, f"member of tar type {member.type!r}")
