"""Request ids: well formed, and never the same sequence in two forked workers."""

from __future__ import annotations

import os

from nubes.api.middleware import REQUEST_ID_RE, new_request_id


def test_request_ids_are_well_formed_and_each_forked_worker_draws_its_own() -> None:
    ids = {new_request_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(REQUEST_ID_RE.match(i) for i in ids)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next id, then out without running anything of pytest's
        os.write(write, new_request_id().encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 100).decode()
    os.close(read)
    assert REQUEST_ID_RE.match(child)
    assert child != new_request_id()  # the parent's next: a copied generator gives the same
