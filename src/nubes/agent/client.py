"""The agent's HTTP client for the controller's /v1/agent face."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any

import httpx


class ControllerError(Exception):
    """The controller refused or could not be reached; ``status`` is None when unreachable."""

    def __init__(self, message: str, status: int | None = None, code: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class ControllerClient:
    def __init__(
        self,
        url: str,
        credential: str = "",
        *,
        timeout: float = 10.0,
        http: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.credential = credential
        self.http = http or httpx.Client(base_url=self.url, timeout=timeout)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.credential}"} if self.credential else {}

    def _call(self, method: str, path: str, *, timeout: float | None = None, **kwargs: Any) -> Any:
        try:
            response = self.http.request(
                method,
                path,
                headers=self._headers(),
                timeout=timeout if timeout is not None else httpx.USE_CLIENT_DEFAULT,
                **kwargs,
            )
        except httpx.HTTPError as exc:
            raise ControllerError(f"cannot reach the controller at {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                message, code = error["message"], error["code"]
            except (ValueError, KeyError, TypeError):
                message, code = response.text[:200], ""
            raise ControllerError(message, response.status_code, code)
        return response.json() if response.content else None

    def join(self, facts: dict[str, Any], token: str | None, name: str | None) -> dict[str, Any]:
        body = {**facts, "token": token, "name": name}
        return dict(self._call("POST", "/v1/agent/join", json=body))

    def heartbeat(
        self,
        metrics: dict[str, Any],
        *,
        leaving: bool = False,
        probe_errors: dict[str, str] | None = None,
        probes_version: str | None = None,
    ) -> dict[str, Any]:
        """Report this cycle's metrics; the answer carries the probes version to have."""
        body: dict[str, Any] = {"metrics": metrics, "leaving": leaving}
        if probe_errors is not None:
            body["probe_errors"] = probe_errors
        if probes_version is not None:
            body["probes_version"] = probes_version
        return dict(self._call("POST", "/v1/agent/heartbeat", json=body) or {})

    def download_probes(self, limit: int = 4 << 20) -> tuple[str, bytes]:
        """This host's probe bundle (a tar) and its version; refused beyond ``limit`` bytes."""
        try:
            with self.http.stream(
                "GET", "/v1/agent/probes", headers=self._headers(), timeout=60
            ) as response:
                if response.status_code >= 400:
                    raise ControllerError(
                        f"probe bundle: HTTP {response.status_code}", response.status_code
                    )
                data = bytearray()
                for chunk in response.iter_bytes(1 << 16):
                    data.extend(chunk)
                    if len(data) > limit:
                        raise ControllerError(f"probe bundle: larger than {limit} bytes")
                return response.headers.get("x-nubes-probes-version", ""), bytes(data)
        except httpx.HTTPError as exc:
            raise ControllerError(f"downloading the probe bundle: {exc}") from exc

    def desired(self, seen: int, wait: float) -> dict[str, Any]:
        return dict(
            self._call(
                "GET", "/v1/agent/desired", params={"seen": seen, "wait": wait}, timeout=wait + 15
            )
        )

    def report(self, instance_id: str, report: dict[str, Any]) -> bool:
        body = self._call("POST", f"/v1/agent/instances/{instance_id}/report", json=report)
        return bool(body["known"])

    def download_image(self, image_id: str, kind: str, dest: Path, checksum: str) -> None:
        """Stream an image file to ``dest`` (atomically), verifying its SHA-256."""
        tmp = dest.with_name(f".{dest.name}.{os.getpid()}.part")
        digest = hashlib.sha256()
        try:
            with self.http.stream(
                "GET",
                f"/v1/agent/images/{image_id}/{kind}",
                headers=self._headers(),
                timeout=600,
            ) as response:
                if response.status_code >= 400:
                    raise ControllerError(
                        f"image {image_id} {kind}: HTTP {response.status_code}",
                        response.status_code,
                    )
                with open(tmp, "wb") as out:
                    for chunk in response.iter_bytes(1 << 20):
                        digest.update(chunk)
                        out.write(chunk)
            if checksum and digest.hexdigest() != checksum:
                raise ControllerError(
                    f"image {image_id} {kind}: checksum mismatch (got {digest.hexdigest()})"
                )
            os.replace(tmp, dest)
        except httpx.HTTPError as exc:
            raise ControllerError(f"downloading image {image_id}: {exc}") from exc
        finally:
            tmp.unlink(missing_ok=True)
