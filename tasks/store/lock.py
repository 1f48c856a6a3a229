"""One writer per OUT: a lock object at ``OUT/_state/writer.lock``, on a local disk or a bucket.

Two runs on one OUT would delete each other's temp files and chunk folders and overwrite
each other's tables. A run takes the lock by creating the object exclusively (``O_EXCL`` on
a local disk; a conditional PUT, ``If-None-Match: *``, on S3 and S3-compatible stores;
``if_generation_match=0`` on GCS); the second run is refused with a message naming the
holder. The holder rewrites its heartbeat every `BEAT_S`. A lock is stale, and taken over,
when its heartbeat is older than `STALE_S`, or at once when its holder is a process of this
machine that no longer exists (a run killed with ``kill -9`` and rerun straight away).
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from datetime import datetime, timezone

from tasks.errors import OutBusyError
from tasks.store.storage import Location, read_bytes, redact, write_bytes_atomic

log = logging.getLogger(__name__)
LOCK_PATH = ("_state", "writer.lock")
BEAT_S = 15.0
STALE_S = 120.0


def _process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (Linux), telling a live process
    from a later one that reuses its pid; None where it cannot be read."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def _alive(holder: dict) -> bool | None:
    """True or False for a holder on this machine, None for one elsewhere (unknown)."""
    if holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int):
        return None
    started = _process_start(pid)
    if started is None:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return holder.get("pid_start") is None
    return started == holder.get("pid_start")


class WriterLock:
    """``with WriterLock(out, what="preannotate run"):`` the body runs as OUT's one writer."""

    def __init__(self, out: Location, what: str, stale_s: float = STALE_S, beat_s: float = BEAT_S):
        self.out, self.what, self.stale_s, self.beat_s = out, what, stale_s, beat_s
        self.path = out.path(*LOCK_PATH)
        self.token = uuid.uuid4().hex
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _body(self) -> bytes:
        return json.dumps({
            "token": self.token, "what": self.what, "host": socket.gethostname(),
            "pid": os.getpid(), "pid_start": _process_start(os.getpid()),
            "started_at": getattr(self, "_started", None) or _now(), "heartbeat_at": time.time(),
        }).encode()

    def __enter__(self) -> "WriterLock":
        self._started = _now()
        for _ in range(3):
            if self._create():
                break
            holder = self._holder()
            if holder is None:
                continue  # released between our try and our look: try again
            age = time.time() - float(holder.get("heartbeat_at") or 0)
            alive = _alive(holder)
            if alive is False or age > self.stale_s:
                why = "its process is gone" if alive is False else f"silent for {age:.0f} s"
                log.warning("taking over the lock of %s (%s)", _describe(holder), why)
                self._remove_if(holder)
                continue
            raise OutBusyError(
                f"{redact(self.out.url(self.out.root))} is being written by {_describe(holder)}, "
                f"last seen {age:.0f} s ago; one run per OUT at a time. Wait for it to end (a "
                f"run that died is taken over {self.stale_s:.0f} s after its last heartbeat), "
                f"or remove {redact(self.out.url(self.path))} if you are sure it is gone")
        else:
            raise OutBusyError(f"could not take the lock {redact(self.out.url(self.path))}")
        self._thread = threading.Thread(target=self._beat, name="out-lock", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        holder = self._holder()
        if holder is not None and holder.get("token") == self.token:
            try:
                self.out.fs.rm(self.path)
            except FileNotFoundError:
                pass

    def _create(self) -> bool:
        """Create the lock object if none exists; False when one does."""
        data = self._body()
        fs, path = self.out.fs, self.path
        if self.out.is_local:
            # Written whole under a private name, then hard-linked into place: link() fails when
            # the lock exists, and a reader never sees a lock without its holder's details.
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.{self.token}"
            with open(tmp, "wb") as f:
                f.write(data)
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
            return True
        try:
            fs.pipe_file(path, data, mode="create")
            return True
        except FileExistsError:
            return False
        except TypeError:  # a store without exclusive writes: look, then write (racy)
            if fs.exists(path):
                return False
            fs.pipe_file(path, data)
            return True
        except OSError as e:
            if "PreconditionFailed" in str(e) or "412" in str(e):
                return False
            raise

    def _holder(self) -> dict | None:
        data = read_bytes(self.out, self.path)
        if data is None:
            return None
        try:
            holder = json.loads(data)
        except ValueError:
            return {"what": "an unknown writer (unreadable lock)", "heartbeat_at": 0}
        return holder if isinstance(holder, dict) else {"heartbeat_at": 0}

    def _remove_if(self, holder: dict) -> None:
        now = self._holder()
        if now is not None and now.get("token") == holder.get("token"):
            try:
                self.out.fs.rm(self.path)
            except FileNotFoundError:
                pass

    def _beat(self) -> None:
        while not self._stop.wait(self.beat_s):
            try:
                holder = self._holder()
                if holder is None or holder.get("token") != self.token:
                    log.error("the lock on %s was taken from this run", self.out.url(self.out.root))
                    return
                write_bytes_atomic(self.out, self.path, self._body())  # never half-read
            except Exception as e:  # a store hiccup: the next beat tries again
                log.warning("could not renew the lock on %s: %s", self.out.url(self.out.root), e)


def _describe(holder: dict) -> str:
    return (f"{holder.get('what', 'a run')} (pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')}, started {holder.get('started_at', '?')})")


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
