"""A long-lived `vlm classify --files-from - --format jsonl` process, shared by the Spark
and Ray examples.

vlm reads paths from stdin as they come and writes one JSON line per path (flushed),
keeping its model loaded while stdin stays open. So one process per worker serves every
batch that worker gets: the model loads once per worker, not once per batch.
"""

import json
import os
import subprocess
import tempfile
import threading

#: The columns of every result row.
COLUMNS = ("path", "label", "probability", "results", "error")


def error_row(path, message):
    return {"path": path, "label": None, "probability": None, "results": None,
            "error": message}


def result_row(path, record):
    """A vlm JSON line as a flat row: the top label and its probability, all labels as JSON."""
    if "error" in record:
        return error_row(path, record["error"])
    ranked = record.get("results") or []
    top = ranked[0] if ranked else {}
    return {"path": path, "label": top.get("label"), "probability": top.get("probability"),
            "results": json.dumps(ranked), "error": None}


class VlmProcess:
    """One vlm process; `label(paths)` sends a batch and waits for its answers.

    If vlm dies, the batch's unanswered paths become error rows and the next batch starts
    a new process.
    """

    def __init__(self, vlm, args, env=None, log_dir=None):
        self.command = [vlm, "classify", "--files-from", "-", "--format", "jsonl", *args]
        self.env = dict(os.environ, **(env or {}))
        self.log_dir = log_dir or tempfile.gettempdir()
        self.proc = None

    def _start(self):
        # vlm's stderr (progress, --verbose notes) goes to a file per process, so a full
        # pipe can never stall it and the notes can be read afterwards.
        fd, self.log_path = tempfile.mkstemp(prefix="vlm-worker-", suffix=".log",
                                             dir=self.log_dir)
        self.log = os.fdopen(fd, "w")
        self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.log, text=True,
                                     bufsize=1, env=self.env)

    def label(self, paths):
        """Result rows for `paths`, one per distinct path, in order."""
        paths = list(dict.fromkeys(p for p in paths if p and "\n" not in p))
        if not paths:
            return []
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        proc = self.proc

        def feed():
            # On its own thread: a long batch would otherwise fill stdin while we are
            # not yet reading stdout.
            try:
                for path in paths:
                    proc.stdin.write(path + "\n")
                proc.stdin.flush()
            except BrokenPipeError:
                pass

        writer = threading.Thread(target=feed, daemon=True)
        writer.start()
        answers = {}
        # vlm answers every input line with one line (an error line for a bad path).
        for _ in paths:
            line = proc.stdout.readline()
            if not line:
                break
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            answers[record.get("path")] = record
        writer.join()
        rows = []
        for path in paths:
            if path in answers:
                rows.append(result_row(path, answers[path]))
            else:
                code = proc.poll()
                rows.append(error_row(path, f"vlm exited with code {code} before answering; "
                                            f"see {self.log_path}"))
        return rows

    def close(self):
        """Closes stdin so vlm finishes, and waits for it."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.stdin.close()
            self.proc.wait()
        if self.proc is not None:
            self.log.close()
        self.proc = None
