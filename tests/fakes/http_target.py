"""A small HTTP server on 127.0.0.1 for workflow http nodes: scripted answers, every request recorded."""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Seen:
    method: str
    path: str
    headers: dict
    body: bytes


@dataclass
class HttpTarget:
    # path → answers taken one per request (the last repeats): (status, body, content type[, delay s[, headers]])
    answers: dict[str, list[tuple]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def start(self) -> HttpTarget:
        target = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self):
                length = int(self.headers.get("content-length") or 0)
                path = self.path.split("?")[0]
                target.seen.append(Seen(self.command, self.path, dict(self.headers), self.rfile.read(length)))
                queue = target.answers.get(path) or [(200, {"ok": True}, "application/json")]
                answer = queue.pop(0) if len(queue) > 1 else queue[0]
                status, body, ctype = answer[:3]
                if len(answer) > 3 and answer[3]:
                    threading.Event().wait(answer[3])
                data = json.dumps(body).encode() if not isinstance(body, str | bytes) else (
                    body.encode() if isinstance(body, str) else body)
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for name, value in (answer[4] if len(answer) > 4 else {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _answer

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
