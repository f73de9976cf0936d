"""A local HTTP listener for governance's outgoing notifications (tests only): records every POST and checks its
signature with the receiver's verifier for MLflow webhooks (governance.service.signing), which is what makes the
scheme "the same as MLflow's"."""

from __future__ import annotations

import http.server
import json
import threading
import time
from dataclasses import dataclass, field
from typing import Any

NOTIFY_SECRET = "notify-secret-0123456789-abcdef"


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    doc: dict[str, Any]
    signature_ok: bool
    reason: str


@dataclass
class Listener:
    """``url`` answers ``statuses`` in turn (then 200) and keeps what it received in ``received``."""

    secret: str = NOTIFY_SECRET
    statuses: list[int] = field(default_factory=list)
    received: list[Received] = field(default_factory=list)

    def start(self) -> "Listener":
        from governance.service import signing

        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                headers = {k: v for k, v in self.headers.items()}
                verdict = signing.verify(secrets=[outer.secret], delivery_id=headers.get("X-Governance-Delivery-Id"),
                                         timestamp=headers.get("X-Governance-Timestamp"),
                                         signature=headers.get("X-Governance-Signature"), body=body,
                                         now=time.time(), window_seconds=300)
                outer.received.append(Received(headers, body, json.loads(body), verdict.ok, verdict.reason))
                status = outer.statuses.pop(0) if outer.statuses else 200
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/governance"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def events(self) -> list[str]:
        return [r.doc["event"] for r in self.received]

    def wait_for(self, event: str, timeout: float = 60.0) -> Received:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for r in self.received:
                if r.doc.get("event") == event:
                    return r
            time.sleep(0.2)
        raise AssertionError(f"no {event} notification within {timeout} s; got {self.events()}")

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
