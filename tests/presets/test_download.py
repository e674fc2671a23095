"""Preset URLs: the digest, the download's deadline and size caps, and unpacking only safe archives.

Everything runs against a real HTTP server on 127.0.0.1 and real archives; the presets are
stand-ins (``resolve`` only needs their three files), so no model is built.
"""

import gzip
import hashlib
import http.server
import io
import os
import subprocess
import sys
import tarfile
import threading
import time
import zipfile

import pytest

from conftest import REPO
from mtlzoo import presets
from mtlzoo.errors import PresetError

PRESET_FILES = {"config.json": b"{}", "model.weights.h5": b"weights", "metadata.json": b'{"name": "stand-in"}'}
LIMIT_VARIABLES = ("MTLZOO_DOWNLOAD_TIMEOUT", "MTLZOO_MAX_DOWNLOAD_BYTES", "MTLZOO_MAX_UNPACKED_BYTES",
                   "MTLZOO_MAX_ARCHIVE_MEMBERS")
ZEROS = "0" * 64


class Site:
    """A real HTTP server on 127.0.0.1 answering each path with a handler function."""

    def __init__(self):
        self.routes = {}
        self.stop = threading.Event()  # set at teardown: slow handlers give up
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                route = site.routes.get(self.path)
                if route is None:
                    self.send_error(404)
                    return
                try:
                    route(self)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up, as it should

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def url(self, path, digest=ZEROS):
        return f"http://127.0.0.1:{self.server.server_port}{path}#sha256={digest}"

    def serve(self, path, data, *, content_length=True):
        """Serve ``data`` at ``path``; the URL, with the data's sha256."""

        def send(handler):
            handler.send_response(200)
            if content_length:
                handler.send_header("Content-Length", str(len(data)))
            handler.end_headers()
            handler.wfile.write(data)

        self.routes[path] = send
        return self.url(path, hashlib.sha256(data).hexdigest())


@pytest.fixture
def site():
    site = Site()
    yield site
    site.stop.set()
    site.server.shutdown()
    site.server.server_close()


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("MTLZOO_CACHE", str(tmp_path / "cache"))
    for name in LIMIT_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "cache"


def assert_no_leftovers(cache):
    """Nothing half-written in the cache after a failed fetch (an empty presets/ may remain)."""
    leftovers = sorted(p.relative_to(cache) for p in cache.rglob("*") if p != cache / "presets")
    assert leftovers == []


def entry(name, data=b""):
    info = tarfile.TarInfo(name)
    info.size, info.mode = len(data), 0o644
    return info, data


def special(name, type_, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = type_, linkname
    if type_ == tarfile.CHRTYPE:
        info.devmajor, info.devminor = 1, 3  # /dev/null's numbers
    return info, None


def preset_entries(folder="preset"):
    return [entry(f"{folder}/{name}", data) for name, data in PRESET_FILES.items()]


def tar_gz(*entries):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def write_preset(directory):
    directory.mkdir(parents=True)
    for name, data in PRESET_FILES.items():
        (directory / name).write_bytes(data)
    return directory


def test_a_valid_archive_is_fetched_within_limits_and_an_upper_case_digest_is_accepted(site, cache):
    data = tar_gz(*preset_entries())
    url = site.serve("/p.tar.gz", data)
    address, digest = url.split("#sha256=")
    exact = presets.DownloadLimits(max_download_bytes=len(data), max_members=3,
                                   max_unpacked_bytes=sum(map(len, PRESET_FILES.values())))
    directory = presets.resolve(f"{address}#sha256={digest.upper()}", limits=exact)
    assert directory == cache / "presets" / digest
    assert sorted(p.name for p in directory.iterdir()) == sorted(PRESET_FILES)
    assert sorted(p.name for p in (cache / "presets").iterdir()) == [digest]  # no staging left


def test_a_digest_that_is_a_path_is_refused_before_touching_the_disk(site, tmp_path, cache):
    write_preset(tmp_path / "evil")
    (cache / "presets").mkdir(parents=True)  # as after any earlier download: '..' can resolve from it
    elsewhere = "../../evil" + "/." * 27  # 64 characters, naming tmp_path/evil from cache/presets
    creates = "../../outside/newx" + "/." * 23
    assert len(elsewhere) == len(creates) == 64
    for digest in (elsewhere, creates):
        with pytest.raises(PresetError, match=r"must end in #sha256=<64 hex digits>"):
            presets.resolve(site.url("/p.tar.gz", digest))
    assert not (tmp_path / "outside").exists()
    assert_no_leftovers(cache)


@pytest.mark.parametrize("fragment", ["sha256=" + "g" * 64, "sha256=" + "0" * 63 + "\n", "sha256= " + "0" * 63,
                                      "sha512=" + "0" * 64, "sha256=" + "0" * 63,
                                      "sha256=" + "\u0660" * 64])  # Arabic-Indic zeros: digits, not hex
def test_a_digest_must_be_exactly_64_hex_digits(site, cache, fragment):
    address = site.url("/p.tar.gz").split("#")[0]
    with pytest.raises(PresetError, match=r"must end in #sha256=<64 hex digits>"):
        presets.resolve(f"{address}#{fragment}")
    assert not (cache / "presets").exists()


def trickle(where, stop):
    """A handler that sends a byte every 0.25 s (in the headers or the body) for up to 6 s."""

    def send(handler):
        if where == "headers":
            handler.wfile.write(b"HTTP/1.0 200 OK\r\nX-Slow: ")
        else:
            handler.send_response(200)
            handler.send_header("Content-Length", "1000")
            handler.end_headers()
        for _ in range(24):
            handler.wfile.write(b"a")
            handler.wfile.flush()
            if stop.wait(0.25):
                return

    return send


@pytest.mark.parametrize("where", ["headers", "body"])
def test_a_trickling_server_is_cut_off_at_the_deadline(site, cache, monkeypatch, where):
    monkeypatch.setenv("MTLZOO_DOWNLOAD_TIMEOUT", "1")
    site.routes["/slow.tar.gz"] = trickle(where, site.stop)
    start = time.monotonic()
    with pytest.raises(PresetError, match=r"/slow.tar.gz' did not finish within the limit MTLZOO_DOWNLOAD_TIMEOUT=1"):
        presets.resolve(site.url("/slow.tar.gz"))
    assert time.monotonic() - start < 3  # each byte came well within any per-read timeout
    assert_no_leftovers(cache)


def test_a_declared_size_over_the_cap_is_refused_before_reading(site, cache, monkeypatch):
    monkeypatch.setenv("MTLZOO_MAX_DOWNLOAD_BYTES", "1000")

    def huge(handler):
        handler.send_response(200)
        handler.send_header("Content-Length", str(10**12))
        handler.end_headers()
        handler.wfile.write(b"x" * 100)
        site.stop.wait(5)  # then hangs: only a client that does not read gets away quickly

    site.routes["/huge.tar.gz"] = huge
    start = time.monotonic()
    with pytest.raises(PresetError, match=r"declares 1000000000000 bytes, more than the limit "
                                          r"MTLZOO_MAX_DOWNLOAD_BYTES=1000; raise it with"):
        presets.resolve(site.url("/huge.tar.gz"))
    assert time.monotonic() - start < 2
    assert_no_leftovers(cache)


def test_a_body_over_the_cap_is_cut_off_without_a_content_length(site, cache, monkeypatch):
    data = tar_gz(*preset_entries(), entry("preset/padding", os.urandom(5000)))
    url = site.serve("/big.tar.gz", data, content_length=False)
    monkeypatch.setenv("MTLZOO_MAX_DOWNLOAD_BYTES", str(len(data) - 1))
    with pytest.raises(PresetError, match=rf"/big.tar.gz' is larger than the limit MTLZOO_MAX_DOWNLOAD_BYTES="
                                          rf"{len(data) - 1}; raise it with that environment variable"):
        presets.resolve(url)
    assert_no_leftovers(cache)


def claims_a_terabyte():
    """A tar.gz whose one member's header claims 1 TiB, with none of its data: bigger than the
    8 GiB default, and unreadable, so only a check made before extracting gives the size error."""
    info = tarfile.TarInfo("preset/model.weights.h5")
    info.size = 1 << 40
    return gzip.compress(info.tobuf(tarfile.GNU_FORMAT) + bytes(tarfile.BLOCKSIZE))


@pytest.mark.parametrize("archive, env, limit", [
    (lambda: tar_gz(*preset_entries(), *(entry(f"preset/pad{i}", bytes(600_000)) for i in range(3))),
     {"MTLZOO_MAX_UNPACKED_BYTES": "1000000"}, "MTLZOO_MAX_UNPACKED_BYTES=1000000"),
    (claims_a_terabyte, {}, f"MTLZOO_MAX_UNPACKED_BYTES={8 << 30}"),
    (lambda: tar_gz(*preset_entries(), *(entry(f"preset/extra{i}") for i in range(30))),
     {"MTLZOO_MAX_ARCHIVE_MEMBERS": "20"}, "MTLZOO_MAX_ARCHIVE_MEMBERS=20"),
], ids=["sum-of-sizes", "claimed-size", "member-count"])
def test_an_archive_past_the_unpacked_caps_is_refused_before_extracting(site, cache, monkeypatch, archive, env, limit):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    url = site.serve("/bomb.tar.gz", archive())
    with pytest.raises(PresetError, match=rf"/bomb.tar.gz'.* the limit {limit}; raise it with that environment"):
        presets.resolve(url)
    assert_no_leftovers(cache)


@pytest.mark.parametrize("name, value", [
    ("MTLZOO_DOWNLOAD_TIMEOUT", "soon"), ("MTLZOO_DOWNLOAD_TIMEOUT", "0"), ("MTLZOO_DOWNLOAD_TIMEOUT", "nan"),
    ("MTLZOO_DOWNLOAD_TIMEOUT", "inf"), ("MTLZOO_MAX_DOWNLOAD_BYTES", "-1"), ("MTLZOO_MAX_DOWNLOAD_BYTES", "1.5"),
    ("MTLZOO_MAX_UNPACKED_BYTES", "8GiB"), ("MTLZOO_MAX_ARCHIVE_MEMBERS", "0"),
])
def test_a_bad_limit_in_the_environment_is_an_error_naming_it(site, cache, monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(PresetError, match=rf"^{name}='{value}' is not valid: expected a (whole number|number of "
                                          r"seconds) > 0\.$"):
        presets.resolve(site.serve("/p.tar.gz", tar_gz(*preset_entries())))
    assert not (cache / "presets").exists()


def test_limits_come_from_the_environment_or_arguments():
    assert tuple(presets.DownloadLimits.ENV.values()) == LIMIT_VARIABLES
    limits = presets.DownloadLimits.from_env({"MTLZOO_DOWNLOAD_TIMEOUT": "2.5", "MTLZOO_MAX_DOWNLOAD_BYTES": " 4_096 ",
                                      "MTLZOO_MAX_UNPACKED_BYTES": ""})
    assert limits == presets.DownloadLimits(timeout=2.5, max_download_bytes=4096)
    default = presets.DownloadLimits()
    assert (default.timeout, default.max_download_bytes, default.max_unpacked_bytes) == (600, 2 << 30, 8 << 30)
    with pytest.raises(PresetError, match=r"DownloadLimits.timeout must be a number > 0, got 0"):
        presets.DownloadLimits(timeout=0)


def zip_archive():
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in PRESET_FILES.items():
            archive.writestr(f"preset/{name}", data)
    return buffer.getvalue()


def truncated(keep):
    data = tar_gz(*preset_entries(), entry("preset/padding", os.urandom(20_000)))
    return data[:keep(len(data))]


# Each case: the archive (given the test's tmp_path) and what the error says. Entries escaping the
# cache aim at tmp_path / "escaped": unpacking happens in cache/presets/.download.*/preset.
UNSAFE = {
    "zip": (lambda tmp: zip_archive(), "is not a .tar.gz archive, which a preset URL must name"),
    "text": (lambda tmp: b"not an archive\n", "is not a .tar.gz archive"),
    "truncated-gzip": (lambda tmp: truncated(lambda n: n // 2), "Cannot unpack .*: (ReadError|EOFError)"),
    "truncated-gzip-header": (lambda tmp: truncated(lambda n: 30), "(Cannot unpack .*: EOFError|not a .tar.gz)"),
    "empty": (lambda tmp: tar_gz(), r"holds no preset: it lacks \['config.json', 'model.weights.h5', 'metadata"),
    "dot-dot": (lambda tmp: tar_gz(*preset_entries(), entry("../../../../escaped", b"x")),
                "unsafe to unpack: '../../../../escaped' would be extracted to .*outside the destination"),
    "absolute": (lambda tmp: tar_gz(*preset_entries(), entry(str(tmp / "escaped"), b"x")),
                 "unsafe to unpack: its member '/.*/escaped' has an absolute path"),
    "symlink-absolute": (lambda tmp: tar_gz(*preset_entries(), special("preset/link", tarfile.SYMTYPE, str(tmp))),
                         "unsafe to unpack: 'preset/link' is a link to an absolute path"),
    "symlink-outside": (lambda tmp: tar_gz(*preset_entries(), special("preset/link", tarfile.SYMTYPE, "../../..")),
                        "unsafe to unpack: 'preset/link' would link to .*outside the destination"),
    "hardlink-outside": (lambda tmp: tar_gz(*preset_entries(),
                                            special("preset/link", tarfile.LNKTYPE, "../../../../escaped")),
                         "unsafe to unpack: 'preset/link' would link to .*outside the destination"),
    "symlink-inside": (lambda tmp: tar_gz(*preset_entries(), special("preset/alias", tarfile.SYMTYPE, "config.json")),
                       "member 'preset/alias' is a symbolic link to 'config.json'; a preset archive may hold only "
                       "directories and regular files"),
    "char-device": (lambda tmp: tar_gz(*preset_entries(), special("preset/null", tarfile.CHRTYPE)),
                    "unsafe to unpack: its member 'preset/null' is a character device; a preset archive"),
    "fifo": (lambda tmp: tar_gz(*preset_entries(), special("preset/pipe", tarfile.FIFOTYPE)),
             "unsafe to unpack: its member 'preset/pipe' is a FIFO; a preset archive"),
}


@pytest.mark.parametrize("case", UNSAFE)
def test_an_unsafe_or_unreadable_archive_is_one_clear_error(site, tmp_path, cache, case):
    build, message = UNSAFE[case]
    url = site.serve("/bad.tar.gz", build(tmp_path))
    with pytest.raises(PresetError, match=message) as error:
        presets.resolve(url)
    assert f"at {url.split('#')[0]!r}" in str(error.value) and "\n" not in str(error.value)
    assert not (tmp_path / "escaped").exists()
    assert_no_leftovers(cache)


def test_the_cli_reports_a_bad_preset_url_in_one_line(site, tmp_path, cache):
    """Two real ``mtlzoo finetune`` runs, at once (each imports TensorFlow): a digest that is a
    path, and an archive that is a zip."""
    path_digest = "../../outside/newx" + "/." * 23
    bad = {"digest": (site.url("/p.tar.gz", path_digest), "must end in #sha256=<64 hex digits>"),
           "zip": (site.serve("/p.zip", zip_archive()), "is not a .tar.gz archive")}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    runs = {case: subprocess.Popen(
        [sys.executable, "-m", "mtlzoo.cli", "finetune", url, str(REPO / "zoo_configs" / "kang_hard_sharing.yaml"),
         "--out", str(tmp_path / case)], cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True) for case, (url, _) in bad.items()}
    for case, run in runs.items():
        _, stderr = run.communicate(timeout=120)
        ours = [line for line in stderr.splitlines() if line.startswith("mtlzoo")]  # TF logs its own lines
        assert run.returncode == 2 and "Traceback" not in stderr, stderr[-3000:]
        assert len(ours) == 1 and ours[0] == stderr.splitlines()[-1], stderr[-3000:]
        assert ours[0].startswith("mtlzoo finetune: error: ") and bad[case][1] in ours[0]
    assert not (tmp_path / "outside").exists()
    assert_no_leftovers(cache)
