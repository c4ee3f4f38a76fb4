"""gunicorn's threaded worker (gthread), with two changes: a request's head is read by the
worker's main loop, and gunicorn's own error answers are problem+json.

**Heads.** gthread hands a connection to a thread as soon as its first byte arrives, and the
thread then blocks until the whole head (request line and header fields) is in: forty
clients that send one byte every 2 s hold every thread, and `/healthz` waits with them.
Here the main loop, which already polls every socket, reads the head without blocking and
gives the connection to a thread only once the head is complete, within HEAD_TIMEOUT_S
(else 408, like nginx's client_header_timeout) and HEAD_BYTES_MAX (else 414 or 431). A
slow head then costs a socket and a buffer, never a thread. Request bodies are not covered:
the front proxy buffers them (README, Production).

**Errors.** gunicorn answers a request it cannot parse (400), an over-long request line (414)
and too many or too long header fields (431) with an HTML page of its own, before the app
sees anything. Here they carry the same problem+json body as the app's answers.
TLS and HTTP/2 belong to the front proxy: this worker refuses to start with either.
"""
from __future__ import annotations

import json
import selectors
import socket
import time
from collections import deque
from functools import partial

from gunicorn.workers.gthread import ThreadWorker

#: The longest a client may take to send a request's head, in seconds (nginx: client_header_timeout).
HEAD_TIMEOUT_S = 10.0
#: The largest head read, in bytes; gunicorn's limit_request_line (4094) and
#: limit_request_field_size (8190) still apply within it.
HEAD_BYTES_MAX = 64 * 1024
#: Bytes one read of a head asks for.
HEAD_READ_BYTES = 8 * 1024
#: How long a refused connection is drained before it is closed, in seconds, and how much of it, in bytes.
LINGER_S = 2.0
LINGER_BYTES_MAX = 256 * 1024
#: The longest detail an error answer quotes of what gunicorn said, in characters.
DETAIL_CHARS_MAX = 200

_HEAD_END = b"\r\n\r\n"
_CODES = {400: "malformed_request", 403: "forbidden", 408: "request_timeout", 414: "request_line_too_long",
          417: "expectation_failed", 431: "request_headers_too_large", 500: "internal_error",
          501: "not_implemented"}
_REASONS = {408: "Request Timeout", 414: "URI Too Long", 431: "Request Header Fields Too Large"}


def problem_answer(status: int, reason: str, detail: str) -> bytes:
    """A whole HTTP/1.1 answer that closes the connection, with a problem+json body as web/problems.py writes it."""
    code = _CODES.get(status, "malformed_request" if 400 <= status < 500 else "internal_error")
    body = json.dumps({"type": f"urn:wallet-pipeline:problem:{code}", "title": code.replace("_", " ").capitalize(),
                       "status": status, "detail": detail[:DETAIL_CHARS_MAX], "code": code}).encode()
    head = (f"HTTP/1.1 {status} {reason}\r\nConnection: close\r\nContent-Type: application/problem+json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n")
    return head.encode("latin-1") + body


class _ProblemSocket:
    """Stands for the client socket while gunicorn writes one of its error pages: the page
    goes out as problem+json, with gunicorn's status and reason."""

    def __init__(self, sock, detail: str):
        self._sock, self._detail = sock, detail

    def __getattr__(self, name):
        return getattr(self._sock, name)

    def sendall(self, data: bytes) -> None:
        status_line = data.split(b"\r\n", 1)[0].decode("latin-1")  # "HTTP/1.1 431 Request Header ..."
        _, status, reason = (status_line.split(" ", 2) + ["", ""])[:3]
        self._sock.sendall(problem_answer(int(status) if status.isdigit() else 500, reason or "Error", self._detail))

    def send(self, data: bytes) -> int:
        self.sendall(data)
        return len(data)


class HeadReadingThreadWorker(ThreadWorker):
    """gthread whose threads only ever see complete request heads (see the module's docstring)."""

    def init_process(self):
        if self.cfg.is_ssl or self.cfg.http2_cleartext in ("prior-knowledge", "both"):
            raise RuntimeError("TLS and HTTP/2 end at the front proxy (README, Production): this worker"
                               " reads plain HTTP/1.1 heads itself")
        self.reading_heads: deque = deque()  # ordered by deadline: each gets the same HEAD_TIMEOUT_S
        self.lingering: deque = deque()  # likewise, LINGER_S
        super().init_process()

    def enqueue_req(self, conn):
        """Every way to a thread passes here, on the main loop: new connections, kept-alive ones
        that became readable, and pipelined requests already buffered."""
        if getattr(conn, "head_complete", False):
            conn.head_complete = False
            super().enqueue_req(conn)
            return
        buffered = conn.parser.unreader.take_buffered() if conn.parser is not None else b""
        conn.head = bytearray(buffered)
        if _HEAD_END in conn.head:
            self._hand_over(conn)
            return
        conn.sock.setblocking(False)
        conn.head_deadline = time.monotonic() + HEAD_TIMEOUT_S
        self.reading_heads.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_head_readable, conn))

    def _on_head_readable(self, conn, _sock) -> None:
        try:
            data = conn.sock.recv(HEAD_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.head += data
        if not data or _HEAD_END in conn.head:
            # A closed connection goes to a thread too: gunicorn sees the end of its data and lets it go.
            self._stop_reading(conn)
            self._hand_over(conn)
        elif len(conn.head) > HEAD_BYTES_MAX:
            self._stop_reading(conn)
            status = 431 if b"\r\n" in conn.head else 414
            self._refuse(conn, status, f"the request's head is larger than {HEAD_BYTES_MAX} bytes")

    def _hand_over(self, conn) -> None:
        conn.head_complete = conn.data_ready = True
        self.enqueue_req(conn)

    def handle(self, conn):
        """In a thread: gives the head read by the main loop to gunicorn's parser, then serves."""
        head, conn.head = bytes(conn.head), bytearray()
        if head:
            conn.sock.setblocking(True)
            conn.init()
            conn.parser.unreader.unread(head)
        return super().handle(conn)

    def handle_error(self, req, client, addr, exc):
        super().handle_error(req, _ProblemSocket(client, str(exc) or type(exc).__name__), addr, exc)

    def _stop_reading(self, conn) -> None:
        self.reading_heads.remove(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # closed already

    def _refuse(self, conn, status: int, detail: str) -> None:
        """Answers and half-closes, then drains what the client still sends for a while before
        closing: closing with unread bytes would reset the connection and lose the answer
        (RFC 9112, section 9.6; gunicorn's threads do the same, blocking, in close_graceful)."""
        try:
            conn.sock.send(problem_answer(status, _REASONS[status], detail))
            conn.sock.shutdown(socket.SHUT_WR)
        except OSError:
            self._close(conn)  # the client is gone or not reading: closing is all that is left
            return
        conn.linger_deadline, conn.drained = time.monotonic() + LINGER_S, 0
        self.lingering.append(conn)
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self._on_linger_readable, conn))

    def _on_linger_readable(self, conn, _sock) -> None:
        try:
            data = conn.sock.recv(HEAD_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        conn.drained += len(data)
        if not data or conn.drained > LINGER_BYTES_MAX:
            self._end_linger(conn)

    def _end_linger(self, conn) -> None:
        self.lingering.remove(conn)
        try:
            self.poller.unregister(conn.sock)
        except (KeyError, ValueError, OSError):
            pass  # closed already
        self._close(conn)

    def _close(self, conn) -> None:
        self.nr_conns -= 1
        conn.close()

    def murder_pending(self):
        """Runs on every turn of the main loop (at least once a second): heads past their time get
        408, and refused connections past their linger time are closed."""
        super().murder_pending()
        now = time.monotonic()
        while self.reading_heads and self.reading_heads[0].head_deadline <= now:
            conn = self.reading_heads[0]
            self._stop_reading(conn)
            self._refuse(conn, 408, f"the request's head did not arrive within {HEAD_TIMEOUT_S:g} s")
        while self.lingering and self.lingering[0].linger_deadline <= now:
            self._end_linger(self.lingering[0])
