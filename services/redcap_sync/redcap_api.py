"""REDCap through PyCap: one client per REDCap project, its token read from a file.

FIONA's REDCap projects have roles (docs/redcap.md): ``incoming`` (studies, series, transfers),
``projects`` (DataTransferProjects), ``routing``, ``coupling`` (CouplingList), ``autoid``, and
``project.<NAME>`` for a research project's own REDCap. Each role's token is the file of that
name in the tokens folder; a role without a file is simply not used.

Every failure of a call is :class:`RedcapUnavailable` (an :class:`Unavailable`): REDCap being
down, a refused token and a rejected field all mean the same for the caller, which keeps the
work and tries again later, while the message says which it was. PyCap blocks (requests), so
calls run in a worker thread. TLS is always verified (against ``ca_bundle`` when given).
"""

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import requests
from redcap.project import Project as PyCapProject
from redcap.request import RedcapError

from fiona_common.errors import ConfigError, Unavailable
from fiona_common.secret_files import read_secret
from fiona_common.settings import RedcapSettings, Settings

log = logging.getLogger(__name__)

ROLES = ("incoming", "projects", "routing", "coupling", "autoid")
TOKEN_LENGTH = 32  # REDCap's tokens are 32 hex characters (PyCap insists on it too)
Row = dict[str, Any]
T = TypeVar("T")


class RedcapUnavailable(Unavailable):
    """REDCap did not do what was asked: unreachable, token refused, request rejected."""


def project_role(name: str) -> str:
    return f"project.{name}"


def tokens_dir(settings: Settings) -> Path:
    configured = settings.redcap_sync.redcap.tokens_dir
    return configured or settings.datadir / "state" / "secrets" / "redcap"


def read_token(path: Path) -> str:
    # PyCap's own length check puts the token into its error message: check here first.
    token = read_secret(path, "REDCap token", min_length=TOKEN_LENGTH).decode()
    if len(token) != TOKEN_LENGTH or not token.isalnum():
        raise ConfigError(f"the REDCap token in {path} is not {TOKEN_LENGTH} letters and digits")
    return token


@dataclass
class RedcapProject:
    """One REDCap project (one token): blocking PyCap calls, wrapped and sorted."""

    role: str
    api: PyCapProject  # its requests carry the timeout given to Project()
    chunk: int
    _metadata: list[Row] | None = field(default=None, repr=False)

    def call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        # PyCap's RedcapError *is* requests' RequestException: transport failures first.
        try:
            return fn(*args, **kwargs)
        except requests.exceptions.SSLError:
            raise RedcapUnavailable(f"REDCap {self.role}: TLS certificate not trusted") from None
        except (requests.ConnectionError, requests.Timeout) as err:
            raise RedcapUnavailable(
                f"REDCap {self.role}: {what} failed: unreachable ({type(err).__name__})"
            ) from None
        except RedcapError as err:
            raise RedcapUnavailable(
                f"REDCap {self.role}: {what} refused: {_message(err)}"
            ) from None
        except ValueError as err:  # an answer that is not JSON (a proxy's error page)
            raise RedcapUnavailable(
                f"REDCap {self.role}: {what} failed: {type(err).__name__}"
            ) from None

    def export(self, **selection: Any) -> list[Row]:
        rows = self.call("export", self.api.export_records, format_type="json", **selection)
        return list(rows)

    def export_chunked(self, records: list[str], **selection: Any) -> list[Row]:
        """Rows of ``records`` (in calls of ``chunk`` records each)."""
        rows: list[Row] = []
        for start in range(0, len(records), self.chunk):
            rows += self.export(records=records[start : start + self.chunk], **selection)
        return rows

    def record_ids(self, id_field: str, fields: list[str], **selection: Any) -> list[str]:
        """The records some row of which has ``fields`` matching ``selection`` (filter_logic,
        date_begin... as PyCap takes them)."""
        chosen = {k: v for k, v in selection.items() if v}
        rows = self.export(fields=[id_field, *fields], **chosen)
        return sorted({str(r[id_field]) for r in rows if r.get(id_field)})

    def import_rows(self, rows: list[Row], overwrite: str = "normal") -> int:
        """Import ``rows`` in calls of ``chunk`` rows (in order); the count REDCap reports."""
        count = 0
        for start in range(0, len(rows), self.chunk):
            part = rows[start : start + self.chunk]
            answer = self.call("import", self.api.import_records, part, overwrite=overwrite)
            count += int(answer.get("count", 0)) if isinstance(answer, dict) else len(part)
        return count

    def metadata(self) -> list[Row]:
        if self._metadata is None:
            found = self.call("metadata export", self.api.export_metadata, format_type="json")
            self._metadata = list(found)
        return self._metadata

    def info(self) -> Row:
        return dict(self.call("project export", self.api.export_project_info, format_type="json"))


def _message(err: RedcapError) -> str:
    content = err.args[0] if err.args else ""
    if isinstance(content, dict):
        content = content.get("error", content)
    return str(content)[:300]


@dataclass
class Redcap:
    """The configured REDCap projects by role; ``None`` roles are not configured."""

    settings: RedcapSettings
    projects: dict[str, RedcapProject]

    def get(self, role: str) -> RedcapProject | None:
        return self.projects.get(role)

    def need(self, role: str) -> RedcapProject:
        found = self.projects.get(role)
        if found is None:
            raise ConfigError(f"REDCap: no token file for {role}")
        return found

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.to_thread(fn, *args, **kwargs)


def open_redcap(settings: Settings, extra_roles: list[str] | None = None) -> Redcap | None:
    """Clients for every role that has a token file; None in local mode (no REDCap url)."""
    config = settings.redcap_sync.redcap
    if config.url is None:
        return None
    folder = tokens_dir(settings)
    roles = list(ROLES)
    if folder.is_dir():
        roles += sorted(p.name for p in folder.iterdir() if p.name.startswith("project."))
    roles += [r for r in extra_roles or [] if r not in roles]
    projects = {}
    for role in roles:
        path = folder / role
        if not path.exists():
            continue
        url = config.url
        if role.startswith("project."):
            url = config.project_urls.get(role.removeprefix("project."), url)
        verify: bool | str = str(config.ca_bundle) if config.ca_bundle else True
        api = PyCapProject(url, read_token(path), verify_ssl=verify, timeout=config.timeout_seconds)
        projects[role] = RedcapProject(role, api, config.chunk)
    if "incoming" not in projects:
        raise ConfigError(f"REDCap is configured but {folder / 'incoming'} (its token) is missing")
    return Redcap(config, projects)
