"""A loopback HTTP server that answers like the InterPro API, scripted per request path.

Usage:

    with FakeInterPro() as server:
        server.script("/entry/pfam/PF00397/?annotation=alignment:full",
                      Reply(status=500), Reply(body=gzip.compress(STOCKHOLM)))
        fetch_family(..., base_url=server.base_url)

Replies for a path are served in order; the last one repeats. A path without a script
answers 404 with a JSON body, as InterPro does. The API root (`/`) answers InterPro's
metadata JSON with the Pfam version in `databases.pfam.version`.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType

API_PREFIX = "/interpro/api"
PFAM_VERSION = "37.2"
INTERPRO_VERSION = "104.0"


class _QuietServer(ThreadingHTTPServer):
    """Does not wait for handler threads, and ignores clients that hang up early."""

    daemon_threads = True
    block_on_close = False

    def handle_error(self, request: object, client_address: object) -> None:
        pass


@dataclass
class Reply:
    """One scripted answer.

    `announce_length` overrides the Content-Length header (a larger value than len(body)
    makes a truncated body: the server closes the connection early). `delay_s` sleeps
    before answering (to trigger client timeouts). `trickle_s` sends the body one byte at a
    time with that pause between bytes (a server that never times a read out); `endless`
    repeats the body until the client hangs up (no Content-Length).
    """

    status: int = 200
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)
    announce_length: int | None = None
    delay_s: float = 0.0
    trickle_s: float = 0.0
    endless: bool = False


class FakeInterPro:
    """Threaded server on 127.0.0.1 (port chosen by the OS); records the paths requested."""

    def __init__(self) -> None:
        self._scripts: dict[str, list[Reply]] = {}
        self._lock = threading.Lock()
        self.requests: list[str] = []
        self.root_reply: Reply = Reply(
            body=json.dumps({"databases": {"pfam": {"canonical": "pfam", "name": "Pfam",
                                                    "version": PFAM_VERSION}}}).encode(),
            headers={"Content-Type": "application/json", "InterPro-Version": INTERPRO_VERSION},
        )
        self._httpd = _QuietServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._httpd.serve_forever, args=(0.02,),
                                        daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}{API_PREFIX}"

    def script(self, path: str, *replies: Reply) -> None:
        """Answer requests for `path` (relative to the API base, with its query string)."""
        with self._lock:
            self._scripts[API_PREFIX + path] = list(replies)

    def count(self, path: str) -> int:
        return sum(1 for seen in self.requests if seen == API_PREFIX + path)

    def __enter__(self) -> FakeInterPro:
        self._thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(timeout=5)

    def _next_reply(self, path: str) -> Reply | None:
        with self._lock:
            self.requests.append(path)
            if path.rstrip("/") == API_PREFIX:
                return self.root_reply
            queue = self._scripts.get(path)
            if not queue:
                return None
            return queue.pop(0) if len(queue) > 1 else queue[0]

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802 (the name http.server dispatches to)
                reply = server._next_reply(self.path)
                if reply is None:
                    reply = Reply(status=404, body=b'{"detail": "No data found"}',
                                  headers={"Content-Type": "application/json"})
                time.sleep(reply.delay_s)
                self.send_response(reply.status)
                headers = {"Content-Type": "text/plain; charset=utf-8",
                           "InterPro-Version": INTERPRO_VERSION, **reply.headers}
                for key, value in headers.items():
                    self.send_header(key, value)
                length = len(reply.body) if reply.announce_length is None \
                    else reply.announce_length
                if not reply.endless:
                    self.send_header("Content-Length", str(length))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                try:
                    if reply.trickle_s:
                        for i in range(len(reply.body)):
                            self.wfile.write(reply.body[i:i + 1])
                            self.wfile.flush()
                            time.sleep(reply.trickle_s)
                    elif reply.endless:
                        while True:
                            self.wfile.write(reply.body)
                    else:
                        self.wfile.write(reply.body)
                        self.wfile.flush()
                except OSError:  # the client hung up
                    pass

            def log_message(self, format: str, *args: object) -> None:  # noqa: A002
                pass

        return Handler
