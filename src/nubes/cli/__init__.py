"""The ``nubes`` command line: a client of the native REST API v1.

It talks to the controller over HTTP only; ``up``, ``down`` and ``status`` also manage the
local controller process through :mod:`nubes.controller`. It never imports the API, the
services or the store.
"""
