"""The HTTP client of the native API: one request method, error bodies turned into ApiError.

``make_http`` is the one place an ``httpx.Client`` is made; tests replace it with a client
of an in-process app. Transport failures become :class:`CliError` with what to check next.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

import httpx
import typer

import nubes
from nubes.cli.credentials import Credentials, GlobalOptions, resolve
from nubes.cli.errors import ApiError, CliError

TIMEOUT_SECONDS = 30.0
PAGE_SIZE = 1000  # the API's largest page

Params = Mapping[str, str | int | bool | None]


def make_http(base_url: str) -> httpx.Client:
    return httpx.Client(
        base_url=base_url,
        timeout=TIMEOUT_SECONDS,
        headers={"User-Agent": f"nubes-cli/{nubes.__version__}"},
    )


def path(*segments: str) -> str:
    """``/v1/<segments>``, each segment percent-encoded (names come from the user)."""
    return "/v1/" + "/".join(quote(s, safe="") for s in segments)


class ApiClient:
    def __init__(
        self, http: httpx.Client, url: str, token: str | None = None, relogin_hint: str = ""
    ) -> None:
        self.http = http
        self.url = url
        self.token = token
        self.relogin_hint = relogin_hint
        self.issued: dict[str, Any] | None = None  # the token response, when we logged in

    def request(
        self,
        method: str,
        url_path: str,
        *,
        json: Any = None,
        params: Params | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        sent = dict(headers or {})
        if self.token:
            sent.setdefault("X-Auth-Token", self.token)
        query = {k: _query_value(v) for k, v in (params or {}).items() if v is not None}
        try:
            response = self.http.request(method, url_path, json=json, params=query, headers=sent)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the controller at {self.url}: is it running? (nubes status)"
            ) from exc
        except httpx.TimeoutException as exc:
            raise CliError(
                f"the controller at {self.url} did not answer within {TIMEOUT_SECONDS:.0f} s"
            ) from exc
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise CliError(f"cannot talk to the controller at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            raise self._error(response)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as exc:
            raise CliError(
                f"the controller at {self.url} answered HTTP {response.status_code} "
                "with a body that is not JSON"
            ) from exc

    def _error(self, response: httpx.Response) -> ApiError:
        request_id = response.headers.get("x-request-id", "")
        try:
            body = response.json()["error"]
            error = ApiError(
                response.status_code,
                str(body["code"]),
                str(body["message"]),
                str(body.get("request_id") or request_id),
            )
        except (ValueError, KeyError, TypeError):
            text = " ".join(response.text.split())[:200] or response.reason_phrase
            error = ApiError(response.status_code, f"HTTP {response.status_code}", text, request_id)
        if response.status_code == 401 and self.relogin_hint:
            error.message = f"{error.message}; {self.relogin_hint}"
        return error

    def get(self, url_path: str, **kwargs: Any) -> Any:
        return self.request("GET", url_path, **kwargs)

    def post(self, url_path: str, **kwargs: Any) -> Any:
        return self.request("POST", url_path, **kwargs)

    def put(self, url_path: str, **kwargs: Any) -> Any:
        return self.request("PUT", url_path, **kwargs)

    def patch(self, url_path: str, **kwargs: Any) -> Any:
        return self.request("PATCH", url_path, **kwargs)

    def delete(self, url_path: str, **kwargs: Any) -> Any:
        return self.request("DELETE", url_path, **kwargs)

    def list_all(
        self, url_path: str, key: str, params: Params | None = None
    ) -> list[dict[str, Any]]:
        """Every item of a paginated list, following ``next_marker``."""
        items: list[dict[str, Any]] = []
        marker: str | None = None
        while True:
            page = self.get(
                url_path, params={**(params or {}), "limit": PAGE_SIZE, "marker": marker}
            )
            items.extend(page[key])
            marker = page.get("next_marker")
            if not marker:
                return items

    def issue_token(
        self, username: str, password: str, project: str | None = None
    ) -> dict[str, Any]:
        body = {"username": username, "password": password}
        if project:
            body["project"] = project
        issued: dict[str, Any] = self.post(path("auth", "tokens"), json=body)
        return issued

    def whoami(self) -> dict[str, Any]:
        """The caller's token: user, project, roles, expiry."""
        if self.issued is not None:
            return self.issued
        info: dict[str, Any] = self.get(path("auth", "tokens"))
        return info


def _query_value(value: str | int | bool) -> str | int:
    return ("true" if value else "false") if isinstance(value, bool) else value


def anonymous(url: str, token: str | None = None) -> ApiClient:
    """A client for ``url`` with no credential resolution (login, logout)."""
    return ApiClient(make_http(url), url, token)


def connect(credentials: Credentials) -> ApiClient:
    """A client with a token: the given one, or one issued for the user name and password."""
    client = ApiClient(
        make_http(credentials.url), credentials.url, credentials.token, credentials.relogin_hint
    )
    if credentials.token is None:
        try:
            client.issued = client.issue_token(
                credentials.username or "", credentials.password or "", credentials.project
            )
        except ApiError as exc:
            if exc.status in (400, 401, 403):
                exc.message = f"{exc.message} (credentials from {credentials.source})"
            raise
        client.token = str(client.issued["token"])
    return client


def global_options(ctx: typer.Context) -> GlobalOptions:
    options = ctx.find_root().obj
    return options if isinstance(options, GlobalOptions) else GlobalOptions()


def api(ctx: typer.Context) -> ApiClient:
    """The client for a command, from the global options and the credential sources."""
    client = connect(resolve(global_options(ctx)))
    ctx.find_root().call_on_close(client.http.close)
    return client
