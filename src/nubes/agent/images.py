"""Image files cached on this host by checksum: fetched from the controller once, shared by
every instance that uses them, verified before use."""

from __future__ import annotations

import threading
from collections import defaultdict
from pathlib import Path

from nubes.agent.client import ControllerClient


class ImageCache:
    def __init__(self, folder: Path, client: ControllerClient) -> None:
        self.folder = folder
        self.client = client
        self._locks: defaultdict[str, threading.Lock] = defaultdict(threading.Lock)
        self._guard = threading.Lock()

    def path(self, image_id: str, kind: str, checksum: str) -> Path:
        """The local file for an image (downloading it the first time)."""
        suffix = "rootfs.tar.gz" if kind == "rootfs" else "disk"
        name = f"{checksum or image_id}.{suffix}"
        dest = self.folder / name
        with self._guard:
            lock = self._locks[name]
        with lock:
            if not dest.exists():
                self.folder.mkdir(parents=True, exist_ok=True)
                self.client.download_image(image_id, kind, dest, checksum)
        return dest
