"""scripts/leshan.py without Java or the internet: checksum-verified idempotent download, version-specific CLI.

The download runs against a throwaway HTTP server on 127.0.0.1 that plays Maven Central, so the
"verified copy in the cache means no request at all" and "a corrupted download never lands in the
cache" properties are checked for real, not mocked.
"""

from __future__ import annotations

import hashlib
import io
import threading
import zipfile
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from leshan_fixtures import leshan_script as ls

M4 = ls.Release("2.0.0-M4")
M17 = ls.Release("2.0.0-M17")


def _jar_bytes() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\n")
    return buf.getvalue()


class FakeCentral:
    """Serves ``files`` (path -> bytes) and records every requested path."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.requests: list[str] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Length", str(len(body or b"")))
                self.end_headers()
                self.wfile.write(body or b"")

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/maven2"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def publish(self, release: ls.Release, jar: bytes, sha1: str | None = None) -> None:
        path = release.url(self.url).removeprefix(self.url.removesuffix("/maven2"))
        self.files[path] = jar
        self.files[path + ".sha1"] = (sha1 or hashlib.sha1(jar).hexdigest()).encode() + b"  " + b"x.jar\n"


@pytest.fixture
def central() -> Iterator[FakeCentral]:
    c = FakeCentral()
    yield c
    c.httpd.shutdown()
    c.httpd.server_close()


def test_fetch_verifies_and_is_idempotent_offline(central: FakeCentral, tmp_path: Path) -> None:
    jar_bytes = _jar_bytes()
    central.publish(M4, jar_bytes)
    jar = ls.fetch(M4, tmp_path, repo=central.url, quiet=True)
    assert jar.read_bytes() == jar_bytes
    assert jar.name == "leshan-server-demo-2.0.0-M4-jar-with-dependencies.jar"
    assert len(central.requests) == 2  # .sha1, then the jar
    assert ls.fetch(M4, tmp_path, repo=central.url, quiet=True) == jar
    assert ls.cached_jar(M4, tmp_path) == jar
    assert len(central.requests) == 2, "a verified cached jar must not touch the network"

    jar.write_bytes(jar_bytes + b"tampered")  # a damaged cache is noticed and repaired
    with pytest.raises(ls.LeshanUnavailable, match="not in the cache"):
        ls.cached_jar(M4, tmp_path)
    assert ls.fetch(M4, tmp_path, repo=central.url, quiet=True).read_bytes() == jar_bytes


def test_checksum_mismatch_leaves_nothing_in_the_cache(central: FakeCentral, tmp_path: Path) -> None:
    central.publish(M4, _jar_bytes(), sha1="0" * 40)
    with pytest.raises(ls.LeshanUnavailable, match="checksum mismatch"):
        ls.fetch(M4, tmp_path, repo=central.url, quiet=True)
    assert list(tmp_path.iterdir()) == []


def test_missing_artifact_is_a_clear_error(central: FakeCentral, tmp_path: Path) -> None:
    with pytest.raises(ls.LeshanUnavailable, match=r"\.sha1"):
        ls.fetch(M17, tmp_path, repo=central.url, quiet=True)


def test_command_line_binds_every_listener_to_loopback(tmp_path: Path) -> None:
    old = ls.command_line("java", tmp_path / "x.jar", M4, ls.Ports(coap=1, coaps=2, web=3), tmp_path)
    assert old[old.index("-lh") + 1] == old[old.index("-slh") + 1] == old[old.index("-wh") + 1] == "127.0.0.1"
    assert "-jh" not in old and "-th" not in old
    assert old[old.index("-m") + 1] == str(tmp_path.resolve())
    assert "--add-opens" in old and old.index("--add-opens") < old.index("-jar")

    new = ls.command_line("java", tmp_path / "x.jar", M17, ls.Ports(1, 2, 3, java_coap=4, tcp=5, tls=6), tmp_path)
    assert M17.artifact == "leshan-demo-server" and M4.artifact == "leshan-server-demo"
    assert new[new.index("-jh") + 1] == new[new.index("-th") + 1] == "127.0.0.1"
    assert new[new.index("-jp") + 1] == "4" and new[new.index("-tp") + 1] == "5"
    assert new[new.index("-tsh") + 1].startswith("127.")  # see TLS_HOST: works around a Leshan port bug
    assert ls.Release("2.0.0-M14").has_java_coap_udp and not ls.Release("2.0.0-M14").has_tcp
    assert ls.Release("2.0.0").has_tcp and ls.Release("2.0.0").artifact == "leshan-demo-server"
    with pytest.raises(ValueError):
        _ = ls.Release("latest").artifact
