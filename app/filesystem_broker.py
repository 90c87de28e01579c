"""The broker that needs no server: kombu's filesystem transport, with atomic writes.

kombu writes a message file in place while a consumer may already move and read it, so a
consumer can read a half-written (often empty) file and crash on the JSON. Here a message
is written under a name no consumer matches and renamed into place when complete.

kombu's consumer also sorts the whole folder and pops its head name by name on every poll:
quadratic in the messages of every queue, so a worker polling an empty queue behind ten
thousand pages of another spent half a core. Here a poll lists the folder once and sorts
only its own queue's names.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from queue import Empty
from time import monotonic
from typing import Any

from kombu.transport import filesystem
from kombu.utils.encoding import bytes_to_str, str_to_bytes
from kombu.utils.json import dumps, loads


class Channel(filesystem.Channel):
    # kombu calls _put with keyword arguments, as its filesystem Channel declares (its base
    # class declares none; mypy sees the two disagree).
    def _put(self, queue: Any, payload: Any, **kwargs: Any) -> Any:  # type: ignore[override]
        name = f"{round(monotonic() * 1000)}_{uuid.uuid4()}.{queue}.msg"
        final = os.path.join(self.data_folder_out, name)
        partial = os.path.join(self.data_folder_out, f".{uuid.uuid4().hex}.partial")
        try:
            with open(partial, "wb") as f:
                f.write(str_to_bytes(dumps(payload)))
            os.replace(partial, final)  # atomic on one filesystem
        except OSError as exc:
            raise filesystem.ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: Any, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        with os.scandir(self.data_folder_in) as entries:
            names = sorted(e.name for e in entries if e.name.partition(".")[2] == wanted)
        processed = self.processed_folder if self.store_processed else tempfile.gettempdir()
        for name in names:
            try:
                # The move is the claim: another consumer that moved it first wins.
                shutil.move(os.path.join(self.data_folder_in, name), processed)
            except OSError:
                continue
            path = os.path.join(processed, name)
            try:
                with open(path, "rb") as f:
                    payload = f.read()
                if not self.store_processed:
                    os.remove(path)
            except OSError as exc:
                raise filesystem.ChannelError(f"Cannot read file {path!r} from queue.") from exc
            return loads(bytes_to_str(payload))
        raise Empty()


class Transport(filesystem.Transport):
    Channel = Channel
