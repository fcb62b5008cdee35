"""Outages on demand: a TCP proxy in front of a real service that can cut it or make it answer 503."""

from __future__ import annotations

import socket
import threading


class Proxy:
    """Forwards 127.0.0.1:`port` to the service on `target_port`, until told otherwise.

    `cut()` drops every connection and refuses new ones (a network outage); `answer(503)` makes
    it answer every HTTP request itself with that status (an overloaded server); `restore()`
    forwards again. Open connections are closed on every change, so keep-alive pools notice.
    """

    def __init__(self, target_port: int):
        self.target = target_port
        self.mode = "forward"
        self.status = 503
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.conns: list[socket.socket] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def cut(self) -> None:
        self._switch("cut")

    def answer(self, status: int) -> None:
        self.status = status
        self._switch("answer")

    def restore(self) -> None:
        self._switch("forward")

    def close(self) -> None:
        self.server.close()
        self._switch("cut")

    def _switch(self, mode: str) -> None:
        with self.lock:
            self.mode = mode
            conns, self.conns = self.conns, []
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            mode = self.mode
            if mode == "cut":
                client.close()
            elif mode == "answer":
                threading.Thread(target=self._answer, args=(client,), daemon=True).start()
            else:
                try:
                    upstream = socket.create_connection(("127.0.0.1", self.target))
                except OSError:
                    client.close()
                    continue
                with self.lock:
                    self.conns += [client, upstream]
                for src, dst in ((client, upstream), (upstream, client)):
                    threading.Thread(target=self._pipe, args=(src, dst, mode), daemon=True).start()

    def _answer(self, client: socket.socket) -> None:
        with self.lock:
            self.conns.append(client)
        try:
            while True:
                request = b""
                while b"\r\n\r\n" not in request:
                    chunk = client.recv(65536)
                    if not chunk:
                        return
                    request += chunk
                body = b'{"error_code": 50301, "message": "unavailable"}'
                client.sendall(f"HTTP/1.1 {self.status} Unavailable\r\nContent-Type: application/json\r\n"
                               f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        except OSError:
            pass
        finally:
            client.close()

    def _pipe(self, src: socket.socket, dst: socket.socket, mode: str) -> None:
        try:
            while data := src.recv(65536):
                if self.mode != mode:
                    break
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.close()
            except OSError:
                pass


class OwnerCheckingS3:
    """An HTTP proxy in front of the real S3 server that checks `x-amz-expected-bucket-owner` as
    AWS S3 does (LocalStack checks it only on bucket-level calls): a request naming another
    account than `owner` gets 403 AccessDenied; every other request is forwarded as it came (its
    signature included). `requests` counts what went through; `unnamed` lists those without the
    header (method and path)."""

    def __init__(self, target_port: int, owner: str):
        import http.client
        import http.server

        proxy = self
        self.owner, self.requests, self.unnamed = owner, 0, []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                named = self.headers.get("x-amz-expected-bucket-owner")
                with proxy.lock:
                    proxy.requests += 1
                    if named is None:
                        proxy.unnamed.append(f"{self.command} {self.path}")
                if named is not None and named != proxy.owner:
                    error = (b'<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code>'
                             b"<Message>Access Denied</Message></Error>")
                    self.send_response(403)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(error)))
                    self.end_headers()
                    self.wfile.write(error if self.command != "HEAD" else b"")
                    return
                upstream = http.client.HTTPConnection("127.0.0.1", target_port, timeout=60)
                upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for name, value in self.headers.items():
                    upstream.putheader(name, value)
                upstream.endheaders(body or None)
                response = upstream.getresponse()
                data = response.read()
                self.send_response(response.status, response.reason)
                for name, value in response.getheaders():
                    if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)
                upstream.close()

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any

        self.lock = threading.Lock()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
