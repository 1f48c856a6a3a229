"""A stage's look-up answers kept between runs, so that a rerun compares state in bulk.

Before a stage runs tasks, the flow asks of every unit (a clip, say) "is it done, and with
what summary?" by reading that unit's state records: at 10,000 clips that is tens of
thousands of small reads, a minute or more on a disk and far more on a bucket. The ledger
(``OUT/_state/ledger/<stage>.json``) keeps each done unit's answer together with

- its *identity*: what besides files the answer depends on (the unit's call, settings and
  versions), and
- the size and version token (local mtime and inode, S3 ETag, GCS generation) of every file
  the look-up reads, taken from one listing per state folder.

A unit whose identity and files are unchanged is answered from the ledger without reading
its state; any other unit is looked up as before. The ledger is only a cache: missing,
stale or unreadable, it costs the reads it would have saved, never a wrong answer, because
every file an answer was read from is compared.
"""

from __future__ import annotations

import hashlib
import json
from bisect import bisect_left
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from tasks.store.storage import Location, list_files, read_bytes, write_bytes_atomic

LEDGER_DIR = "_state/ledger"
# Part of every identity: a release that changes what a look-up answers starts afresh.
LEDGER_VERSION = 1


@dataclass(frozen=True)
class Unit:
    """What one look-up's answer depends on: ``identity`` (JSON-able) and the files it reads,
    as (folder, path prefix) pairs; every file under a prefix counts, folders are listed."""

    identity: Any
    reads: tuple[tuple[str, str], ...]

    @property
    def key(self) -> str:
        text = json.dumps([LEDGER_VERSION, self.identity], sort_keys=True, default=str)
        return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


class Ledger:
    """The look-up answers of one stage in one output folder (see the module's docstring)."""

    def __init__(self, out: Location, stage: str, units: list[Unit],
                 encode: Callable[[Any], Any] = lambda answer: answer,
                 decode: Callable[[Any], Any] = lambda kept: kept):
        """``encode``/``decode``: an answer to and from its JSON-able form (a typed record)."""
        self.out, self.units = out, units
        self._encode, self._decode = encode, decode
        self.path = out.path(LEDGER_DIR, f"{stage}.json")
        self._folders = sorted({folder for unit in units for folder, _ in unit.reads})
        try:
            self._listing: _Listing | None = _Listing(out, self._folders)
        except Exception:  # a cache: a store that cannot list means looking every unit up
            self._listing = None
        self._entries = self._load() if self._listing else {}

    def _load(self) -> dict[str, list]:
        try:
            data = read_bytes(self.out, self.path)
            entries = json.loads(data)["entries"] if data is not None else {}
        except Exception:  # a cache: unreadable means empty, and it is rewritten
            return {}
        return entries if isinstance(entries, dict) else {}

    def answers(self) -> list[Any]:
        """Each unit's kept answer when its identity and files are unchanged, else None."""
        if self._listing is None:
            return [None] * len(self.units)
        found = []
        for unit in self.units:
            entry = self._entries.get(unit.key)
            fresh = (isinstance(entry, list) and len(entry) == 2
                     and entry[0] == self._listing.digest(unit.reads))
            found.append(self._decode(entry[1]) if fresh else None)
        return found

    def look_up(self, look: Callable[[int], Any], quiet: bool = True) -> list[Any]:
        """Each unit's answer: kept ones from the ledger, the others ``look(i)``
        (`fill_missing`)."""
        return fill_missing(self.answers(), look, quiet)

    def keep(self, answers: list[Any]) -> None:
        """Keep ``answers`` as they are now, with no task run since they were read."""
        self._save(answers, {})

    def settle(self, answers: list[Any], look: Callable[[int], Any]) -> None:
        """After the stage ran: keep every done unit's answer. ``answers`` are those given
        before the stage's tasks ran (None where a task had work to do), ``look(i)`` looks
        unit ``i`` up now. Units found done before kept their answers (their tasks did not
        run); the others are looked up again, after one new listing of the folders.

        Each answer is kept with the digest of a listing taken *before* it was read: a file
        that changed in between (a review saved meanwhile) then fails the next run's
        comparison, and that unit is looked up again."""
        if self._listing is None:
            return
        redo = [i for i, answer in enumerate(answers) if answer is None]
        if not redo:
            self.keep(answers)
            return
        try:
            listing = _Listing(self.out, self._folders)
        except Exception:
            return
        looked = fill_missing([None] * len(redo), lambda j: look(redo[j]))
        self._save(answers, {i: (answer, listing) for i, answer in zip(redo, looked)})

    def _save(self, answers: list[Any], redone: dict[int, tuple[Any, "_Listing"]]) -> None:
        """Write the entries: ``redone[i]`` (an answer and the listing taken before it was
        read) for units looked up again, ``answers[i]`` under the first listing otherwise."""
        if self._listing is None:
            return
        entries = {}
        for i, unit in enumerate(self.units):
            answer, listed = redone.get(i, (answers[i], self._listing))
            answer = None if answer is None else self._encode(answer)
            if answer is not None and _round_trips(answer):
                entries[unit.key] = [listed.digest(unit.reads), answer]
        if entries == self._entries:
            return
        try:
            write_bytes_atomic(self.out, self.path, json.dumps(
                {"version": LEDGER_VERSION, "entries": entries}, sort_keys=True).encode())
        except Exception:  # not kept: the next run looks its units up one by one
            return
        self._entries = entries


class _Listing:
    """Size and version token of every file under some folders, from one listing each."""

    def __init__(self, out: Location, folders: Iterable[str]):
        files: dict[str, str] = {}
        for folder in folders:
            for path, (size, token) in list_files(out, folder).items():
                files[path] = f"{size}:{token}"
        self._paths = sorted(files)
        self._files = files

    def digest(self, reads: Iterable[tuple[str, str]]) -> str:
        h = hashlib.blake2b(digest_size=16)
        for _, prefix in reads:
            i = bisect_left(self._paths, prefix)
            while i < len(self._paths) and self._paths[i].startswith(prefix):
                h.update(f"{self._paths[i]}\0{self._files[self._paths[i]]}\n".encode())
                i += 1
            h.update(b"\1")
        return h.hexdigest()


def fill_missing(found: list[Any], look: Callable[[int], Any], quiet: bool = True,
                 threads: int = 16) -> list[Any]:
    """``found`` with each None replaced by ``look(i)``, in a thread pool (a state read on a
    bucket is a round trip). ``quiet``: a look that raises is None (its unit is redone, and
    its task reports what is wrong)."""
    todo = [i for i, answer in enumerate(found) if answer is None]
    if not todo:
        return found

    def call(i: int) -> Any:
        try:
            return look(i)
        except Exception:
            if quiet:
                return None
            raise

    with ThreadPoolExecutor(min(threads, len(todo)), thread_name_prefix="look-up") as pool:
        for i, answer in zip(todo, pool.map(call, todo)):
            found[i] = answer
    return found


def _round_trips(answer: Any) -> bool:
    """Only answers that JSON gives back unchanged are kept (a tuple would come back a list)."""
    try:
        return json.loads(json.dumps(answer)) == answer
    except (TypeError, ValueError):
        return False
