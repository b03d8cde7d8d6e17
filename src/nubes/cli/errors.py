"""The two failures a command reports as one line on stderr (exit 1).

CliError            something on this side: no credentials, a missing file, no controller
└── ApiError        the controller answered with an error body
"""

from __future__ import annotations


class CliError(Exception):
    """A failure the user can act on; the message says what happened and what to do."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class ApiError(CliError):
    """The API's ``{"error": {"code", "message", "request_id"}}``, kept whole."""

    def __init__(self, status: int, code: str, message: str, request_id: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.request_id = request_id

    def __str__(self) -> str:
        where = f", request {self.request_id}" if self.request_id else ""
        return f"{self.message} ({self.code}{where})"
