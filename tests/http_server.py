"""A loopback HTTP file server for download tests: Range requests, cut connections, 404."""

import hashlib
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves `files` ({'/name': bytes}) on 127.0.0.1, each with an ETag (a digest of its
    body) and Range requests honoured as HTTP says (`If-Range` naming another ETag: the
    whole body). `cut_next[path] = n` makes the next request for `path` send only n bytes of
    its body, then close the connection. `pause` seconds are spent half-way through every
    body (for overlapping downloads). `misbehave[path]` makes the server answer that path
    wrongly: 'no-length' (no Content-Length), 'bad-length' (Content-Length: abc),
    'no-validator' (no ETag), 'range-from-zero' (206 for a Range request, but the whole body
    from byte 0), 'range-elsewhere' (206 starting at another byte than asked), 'drip' (a
    byte every `drip` seconds), 'silent' (headers, then nothing), 'endless' (no length, a
    body that never ends), 'redirect:URL' (a 302 to URL)."""

    def __init__(self):
        self.files, self.cut_next, self.requests, self.misbehave = {}, {}, [], {}
        self.pause, self.drip = 0.0, 0.2
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
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                if how in ("drip", "silent", "endless"):
                    return self.misbehave(how, body)
                if how and how.startswith("redirect:"):
                    self.send_response(302)
                    self.send_header("Location", how.partition(":")[2])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                ranged = self.headers.get("Range") and self.headers.get("If-Range", etag) == etag
                if ranged:
                    start = int(self.headers["Range"].split("=")[1].split("-")[0])
                    if start >= len(body):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(body)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    if how == "range-from-zero":
                        start = 0
                    elif how == "range-elsewhere":
                        start = start // 2
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
                else:
                    self.send_response(200)
                if how != "no-validator":
                    self.send_header("ETag", etag)
                if how == "bad-length":
                    self.send_header("Content-Length", "abc")
                elif how != "no-length":
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
                if cut is not None or how in ("no-length", "bad-length"):
                    self.close_connection = True

            def misbehave(self, how, body):
                self.send_response(200)
                if how != "endless":
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.flush()
                self.close_connection = True
                try:
                    if how == "silent":
                        time.sleep(30)
                    elif how == "drip":
                        for byte in body:
                            self.wfile.write(bytes([byte]))
                            self.wfile.flush()
                            time.sleep(server.drip)
                    else:
                        block = b"\0" * 65536
                        while True:
                            self.wfile.write(block)
                except OSError:  # the client gave up
                    pass

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
