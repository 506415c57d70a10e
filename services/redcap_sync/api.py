"""The JSON API under ``/api/`` on the service's HTTP port (for portals and scripts).

``GET /api/studies[?all=1]`` lists complete studies (unassigned ones unless ``all``);
``POST /api/assign`` with ``{"study_uid", "project", "subject", "event"?, "site"?}`` assigns one,
with the same checks as ``fiona assign``. Every call needs ``Authorization: Bearer <token>``,
the token read from ``REDCAP_SYNC.API_TOKEN_FILE``. Identifiers appear only as keyed hashes.
"""

import asyncio
import hmac
import json
import logging
from collections.abc import Coroutine, Mapping
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

from fiona_common.errors import BadInput, FionaError
from fiona_common.metrics import ApiHandler
from fiona_common.secret_files import read_secret
from services.redcap_sync.handlers import SyncDeps, assign
from services.redcap_sync.registry import StudyRecord

log = logging.getLogger(__name__)
T = TypeVar("T")
CALL_TIMEOUT = 30.0


def read_token(path: Path) -> str:
    return read_secret(path, "API token").decode("utf-8", "replace")


def public(record: StudyRecord) -> dict[str, Any]:
    """A record as the API shows it (no outbox, no per-step history)."""
    data = record.model_dump(mode="json", exclude={"outbox"})
    for transfer in data["transfers"].values():
        transfer.pop("history", None)
    return data


def make_api(deps: SyncDeps, loop: asyncio.AbstractEventLoop, token: str) -> ApiHandler:
    expected = f"Bearer {token}".encode()

    def call(work: Coroutine[Any, Any, T]) -> T:
        # The HTTP server runs on its own threads; the registry lives on the service's loop.
        return asyncio.run_coroutine_threadsafe(work, loop).result(CALL_TIMEOUT)

    def handle(
        method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> tuple[int, Any]:
        if not hmac.compare_digest(headers.get("authorization", "").encode(), expected):
            return 401, {"error": "unauthorized"}
        url = urlsplit(target)
        try:
            if method == "GET" and url.path == "/api/studies":
                everything = parse_qs(url.query).get("all", ["0"])[0] not in ("0", "")
                records = call(deps.registry.all_records())
                shown = [public(r) for r in records if everything or not r.assigned]
                return 200, {"studies": shown}
            if method == "POST" and url.path == "/api/assign":
                return 200, public(call(_assign(deps, body)))
        except BadInput as err:
            return 400, {"error": err.code, "message": str(err)}
        except (FionaError, TimeoutError) as err:
            log.warning("API call failed", extra={"error": type(err).__name__})
            return 503, {"error": "unavailable", "message": type(err).__name__}
        return 404, {"error": "no such route"}

    return handle


async def _assign(deps: SyncDeps, body: bytes) -> StudyRecord:
    try:
        request = json.loads(body or b"{}")
    except ValueError:
        raise BadInput("bad_request", "the body is not JSON") from None
    if not isinstance(request, dict):
        raise BadInput("bad_request", "the body must be a JSON object")
    fields = {k: request.get(k) for k in ("study_uid", "project", "subject", "event", "site")}
    if not all(
        isinstance(fields[k], str) and fields[k] for k in ("study_uid", "project", "subject")
    ):
        raise BadInput("bad_request", "study_uid, project and subject are required strings")
    return await assign(
        deps,
        str(fields["site"] or "default"),
        str(fields["study_uid"]),
        str(fields["project"]),
        str(fields["subject"]),
        str(fields["event"] or ""),
    )
