"""Worker processes that take turns: the benchmarks' way of comparing runs on a machine
whose speed drifts by up to 20% within minutes.

Each side of a comparison runs in a process of its own (its own framework, venv and peak
memory), serving JSON lines: the coordinator writes a command, the worker answers one JSON
object. The coordinator asks the workers in turn, round after round, so the drift falls on
all of them alike.

    worker = Worker([python, script, "--worker", ...], "timm train")   # coordinator
    seconds = worker.ask({"do": "steps", "steps": 2})["seconds"]
    serve(lambda command: {...})                                      # in the worker
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys


class Worker:
    """A worker process running `command`, ready once it has said so (`serve`).
    `source`: another version of the package to import (its `src` folder, first on PYTHONPATH)."""

    def __init__(self, command: list, name: str, source: str | None = None):
        self.name = name
        environment = dict(os.environ, GLOG_v="3")
        if source:  # another version of the package, e.g. a worktree of an earlier commit
            environment["PYTHONPATH"] = source
        self.process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        env=environment)
        self.ask(None)

    def ask(self, command):
        """Send `command` (None: only wait for the next answer) and return the answer."""
        if command is not None:
            self.process.stdin.write(json.dumps(command) + "\n")
            self.process.stdin.flush()
        while True:  # lines that are not JSON objects are a framework's chatter
            line = self.process.stdout.readline()
            if not line:
                raise RuntimeError(f"worker {self.name} ended")
            if line.startswith("{"):
                return json.loads(line)

    def close(self):
        self.process.stdin.write(json.dumps({"do": "stop"}) + "\n")
        self.process.stdin.close()
        self.process.wait()


def serve(answer) -> None:
    """The worker's loop: say it is ready, then answer each command read from stdin with
    `answer(command)` (a dict), until `{"do": "stop"}`. `{"do": "memory"}` is answered here:
    the process's peak resident memory."""
    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        if command["do"] == "stop":
            return
        if command["do"] == "memory":
            reply = {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
        else:
            reply = answer(command)
        print(json.dumps(reply), flush=True)
