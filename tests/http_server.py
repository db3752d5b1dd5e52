"""A loopback HTTP file server for download tests: Range requests, cut connections, 404."""

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves `files` ({'/name': bytes}) on 127.0.0.1. `cut_next[path] = n` makes the next
    request for `path` send only n bytes of its body, then close the connection. `pause`
    seconds are spent half-way through every body (for overlapping downloads).
    `misbehave[path]` makes the server answer that path wrongly: 'no-length' (no
    Content-Length), 'range-from-zero' (206 for a Range request, but the whole body from
    byte 0), 'range-elsewhere' (206 starting at another byte than asked)."""

    def __init__(self):
        self.files, self.cut_next, self.requests, self.misbehave = {}, {}, [], {}
        self.pause = 0.0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                body = server.files.get(self.path)
                if body is None:
                    self.send_error(404, "Not Found")
                    return
                start, how = 0, server.misbehave.get(self.path)
                if self.headers.get("Range"):
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_error(416, "Range Not Satisfiable")
                        return
                    if how == "range-from-zero":
                        start = 0
                    elif how == "range-elsewhere":
                        start = start // 2
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if how != "no-length":
                    self.send_header("Content-Length", str(len(body) - start))
                self.end_headers()
                cut = server.cut_next.pop(self.path, None)
                body = body[start:start + cut] if cut is not None else body[start:]
                if server.pause:
                    self.wfile.write(body[:len(body) // 2])
                    self.wfile.flush()
                    time.sleep(server.pause)
                    body = body[len(body) // 2:]
                self.wfile.write(body)
                if cut is not None:
                    self.close_connection = True

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def url(self, path):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}{path}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()
