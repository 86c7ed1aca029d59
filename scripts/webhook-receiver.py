#!/usr/bin/env python3
"""A Standard Webhooks receiver for secret-rotator's webhook dependents, for demos and staging.

    scripts/webhook-receiver.py PORT KEY

Listens on 127.0.0.1:PORT. Each POST is checked: a `webhook-timestamp` within 5 minutes and a
`webhook-signature` entry `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">` made with KEY
(`whsec_<base64>`). A verified event is printed (one line: type, id, version, reason) and answered
200; anything else is printed as REJECTED and answered 401. Repeated ids are marked as such (a
delivery is at least once). Standard library only.
"""

import base64
import hashlib
import hmac
import json
import sys
import time
from http.server import BaseHTTPRequestHandler, HTTPServer

TOLERANCE = 5 * 60


def verify(key, headers, body):
    msg_id = headers.get("webhook-id")
    stamp = headers.get("webhook-timestamp")
    signatures = headers.get("webhook-signature", "")
    if not msg_id or not stamp:
        return "missing webhook-id or webhook-timestamp"
    try:
        if abs(time.time() - int(stamp)) > TOLERANCE:
            return "timestamp older or newer than 5 minutes"
    except ValueError:
        return "timestamp is not a number"
    secret = base64.b64decode(key.removeprefix("whsec_"))
    signed = f"{msg_id}.{stamp}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(secret, signed, hashlib.sha256).digest()).decode()
    if any(hmac.compare_digest(expected, s) for s in signatures.split(" ")):
        return None
    return "no valid signature"


def main():
    port, key = int(sys.argv[1]), sys.argv[2]
    seen = set()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            problem = verify(key, self.headers, body)
            if problem:
                print(f"webhook: REJECTED ({problem})", flush=True)
                self.send_response(401)
                self.end_headers()
                return
            event = json.loads(body)
            msg_id = self.headers["webhook-id"]
            again = " (again)" if msg_id in seen else ""
            seen.add(msg_id)
            data = event.get("data", {})
            print(
                f"webhook: verified {event['type']}{again} id={msg_id} "
                f"credential={data.get('credential')} version={data.get('version')} "
                f"reason={data.get('reason')!r}",
                flush=True,
            )
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    HTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
