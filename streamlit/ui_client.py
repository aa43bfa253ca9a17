"""The inference API as the Streamlit app sees it: one method per endpoint it uses.

Every failure (nothing listening, timeout, an HTTP error, an answer off the contract)
comes out as a `ui_logic.ApiError` with a readable message, never as an httpx exception.
A client keeps one `httpx.Client` (its connection pool) for all its calls; the app shares
one client between its sessions (`ui_components.api_client`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import httpx
from ui_logic import (
    ApiError,
    ModelRef,
    Prediction,
    PredictionResult,
    UiSettings,
    error_from_exception,
    error_from_response,
    parse_batch,
    parse_prediction,
)


class ApiClient:
    """Calls the inference API at `settings.api_url` with `settings.timeout_seconds`."""

    def __init__(self, settings: UiSettings, transport: httpx.BaseTransport | None = None) -> None:
        self.settings = settings
        # thread-safe: Streamlit runs each session's script in its own thread
        self._http = httpx.Client(
            base_url=settings.api_url, timeout=settings.timeout_seconds, transport=transport
        )

    def close(self) -> None:
        self._http.close()

    def _call(
        self,
        method: str,
        path: str,
        body: object = None,
        *,
        row_offset: int | None = None,
        text: bool = False,
        params: Mapping[str, str] | None = None,
    ) -> Any:
        """One request; the decoded JSON answer (with `text`, the text of a success), or
        ApiError."""
        what = f"{method} {path}"
        try:
            response = self._http.request(method, path, json=body, params=params)
        except httpx.HTTPError as exc:
            raise error_from_exception(
                exc, self.settings.api_url, self.settings.timeout_seconds
            ) from exc
        if text and response.is_success:
            return response.text
        try:
            payload = response.json()
        except ValueError:
            payload = response.text.strip() or None
            if response.is_success:
                raise ApiError(
                    "bad_response",
                    f"The inference API answered {what} with something that is not JSON "
                    f"(HTTP {response.status_code}). Does API_URL point at the inference API?",
                    status_code=response.status_code,
                ) from None
        if not response.is_success:
            raise error_from_response(response.status_code, payload, what, row_offset)
        return payload

    def ready(self) -> ModelRef | None:
        """GET /ready: the served model, or ApiError (503 when none is loaded yet)."""
        payload = self._call("GET", "/ready")
        model = payload.get("model") if isinstance(payload, Mapping) else None
        if isinstance(model, Mapping) and "version" in model:
            return ModelRef(str(model.get("name")), str(model["version"]), model.get("alias"))
        return None

    def predict(self, encounter: Mapping[str, Any], explain: bool = False) -> PredictionResult:
        """POST /predict for one encounter; with `explain`, its top factors too."""
        params = {"explain": "true"} if explain else None
        return parse_prediction(self._call("POST", "/predict", dict(encounter), params=params))

    def importance(self) -> dict[str, Any]:
        """GET /model/importance: the served model's global feature importance."""
        return self._mapping(self._call("GET", "/model/importance"), "GET /model/importance")

    def predict_batch(
        self, encounters: Sequence[Mapping[str, Any]], row_offset: int = 0
    ) -> tuple[list[Prediction], ModelRef]:
        """POST /predict/batch for at most 1,000 encounters; `row_offset` (the first row's
        index in the file) lets a 422 name the file's rows."""
        body = {"encounters": [dict(e) for e in encounters]}
        payload = self._call("POST", "/predict/batch", body, row_offset=row_offset)
        return parse_batch(payload, len(encounters))

    def model(self) -> dict[str, Any]:
        """GET /model: the served version, its tags and metrics."""
        return self._mapping(self._call("GET", "/model"), "GET /model")

    def model_versions(self) -> list[dict[str, Any]]:
        """GET /model/versions: every registered version, newest first."""
        payload = self._mapping(self._call("GET", "/model/versions"), "GET /model/versions")
        versions = payload.get("versions")
        if not isinstance(versions, list) or not all(isinstance(v, Mapping) for v in versions):
            raise ApiError(
                "bad_response", "The inference API answered GET /model/versions without a list."
            )
        return versions

    def model_history(self) -> list[dict[str, Any]]:
        """GET /model/history: every move of the production alias, newest first."""
        payload = self._mapping(self._call("GET", "/model/history"), "GET /model/history")
        moves = payload.get("moves")
        if not isinstance(moves, list) or not all(isinstance(m, Mapping) for m in moves):
            raise ApiError(
                "bad_response", "The inference API answered GET /model/history without a list."
            )
        return moves

    def operating_points(self) -> dict[str, Any]:
        """GET /model/operating-points: the top-k table, the tiers, the calibration."""
        what = "GET /model/operating-points"
        return self._mapping(self._call("GET", "/model/operating-points"), what)

    def model_card_markdown(self) -> str:
        """GET /model/card?format=markdown: the served version's model card."""
        what = "GET /model/card"
        payload = self._call("GET", "/model/card?format=markdown", text=True)
        if not payload.strip():
            raise ApiError("bad_response", f"The inference API answered {what} with no text.")
        return payload

    @staticmethod
    def _mapping(payload: object, what: str) -> dict[str, Any]:
        if not isinstance(payload, Mapping):
            raise ApiError(
                "bad_response", f"The inference API answered {what} with no JSON object."
            )
        return dict(payload)
