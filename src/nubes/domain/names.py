"""What a resource name may be. One rule for every resource, so every face refuses alike."""

from __future__ import annotations

import re

NAME_MAX = 64
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@+-]*$"
NAME_RE = re.compile(NAME_PATTERN)
NAME_RULE = (
    f"1 to {NAME_MAX} characters: letters, digits and _ . @ + -, starting with a letter or digit"
)
