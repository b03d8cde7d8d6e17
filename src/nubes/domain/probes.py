"""The probe rules the controller (which packs and checks probes) and the agent (which runs
them and parses their output) must agree on; the agent may share only ``domain`` with it."""

from __future__ import annotations

import re

#: a metric a probe prints: NAME=VALUE, NAME in upper snake case
METRIC_NAME = re.compile(r"^[A-Z][A-Z0-9_]{0,63}$")
#: a probe's file name
PROBE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
#: the probe directory every host runs, besides its hypervisor kind's
COMMON = "common"
KINDS = ("qemu", "lxc", "fake")
MAX_PROBES = 64
MAX_PROBE_BYTES = 256 * 1024
MAX_BUNDLE_BYTES = 2 * 1024 * 1024
#: built-in attributes the agent reports as strings; every other metric is a number
STRING_METRICS = frozenset({"HYPERVISOR", "ARCH"})
