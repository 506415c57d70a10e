"""``fiona pacs echo|find|move|get``: an admin's query/retrieve against a configured PACS node.

Failures are :class:`FionaError` with one line of text (``fiona`` prints it, exit code 1).
Query results go to the admin's terminal, PatientName included: that is what ``find`` is for;
nothing here logs them.
"""

import argparse
import json
import logging
import sys
from typing import TYPE_CHECKING, TextIO

from fiona_common.errors import BadInput, FionaError
from fiona_common.settings import Listener, Settings

if TYPE_CHECKING:  # pynetdicom takes most of a second to import: only for these commands
    from fiona_ops.dicom_peer import DicomPeer
    from fiona_ops.pacs import StoreHandler
    from fiona_ops.retrieve import Retrieve

RETRIEVE_HELP = "the study's Study Instance UID, or an accession number (every study with it)"


class _ActionParser(argparse.ArgumentParser):
    """Takes ``KEY=VALUE`` words wherever they are: argparse alone refuses those that follow
    an option given after NODE (``find CLINICAL --json PatientID=X``)."""

    def parse_known_args(  # type: ignore[override]
        self, args: list[str] | None = None, namespace: argparse.Namespace | None = None
    ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        if hasattr(parsed, "keys"):
            words = [w for w in extras if "=" in w and not w.startswith("-")]
            parsed.keys = [*parsed.keys, *words]
            extras = [w for w in extras if w not in words]
        return parsed, extras


def add_pacs_actions(pacs: argparse.ArgumentParser) -> None:
    """The sub-actions of ``fiona pacs`` (``--config``/``--data`` also after the action)."""
    actions = pacs.add_subparsers(
        dest="action", required=True, metavar="ACTION", parser_class=_ActionParser
    )

    def action(name: str, text: str) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=text, description=text)
        p.add_argument("node", metavar="NODE", help="a PACS_NODES name from the configuration")
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)
        p.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS)
        return p

    action("echo", "C-ECHO the node and show the round-trip time")
    find = action("find", "C-FIND: list studies, series or images matching KEY=VALUE filters")
    find.add_argument("--level", choices=["study", "series", "image"], default="study")
    find.add_argument("--json", action="store_true", help="JSON instead of a table")
    find.add_argument(
        "keys",
        nargs="*",
        metavar="KEY=VALUE",
        help="DICOM keywords: PatientID=X, StudyDate=20240101-20240131, Modality=MR, "
        "AccessionNumber=A1, StudyInstanceUID=...; KEY= to show a column",
    )
    for name, text in (
        ("move", "C-MOVE studies to FIONA's own listener; they complete on the PACS's count"),
        ("get", "C-GET studies into FIONA's inbox/ (where the PACS allows C-GET)"),
    ):
        p = action(name, text)
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--study", metavar="UID", help=RETRIEVE_HELP)
        which.add_argument("--accession", metavar="NUMBER", help=RETRIEVE_HELP)
        p.add_argument("--site", default="default", help="SITES project to receive it")
    actions.choices["move"].add_argument(
        "--dest",
        metavar="AET",
        help="move destination (default: the node's move_aet, or the site's)",
    )


def run_pacs(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run one ``fiona pacs`` action, printing to ``out`` (stdout); the exit code."""
    from fiona_ops.dicom_peer import DicomPeer

    out = out or sys.stdout

    # pynetdicom's own errors would repeat ours; the outcome is reported once, below.
    logging.getLogger("pynetdicom").setLevel(logging.CRITICAL)
    node = settings.pacs_nodes.get(args.node)
    if node is None:
        known = ", ".join(sorted(settings.pacs_nodes)) or "none configured (PACS_NODES)"
        raise FionaError(f"no PACS node named {args.node!r}; known: {known}")
    peer = DicomPeer.of_node(args.node, node, settings.dicomaetitle)
    if args.action == "echo":
        from fiona_ops.dicom_peer import echo

        print(f"{peer.describe()}: C-ECHO ok in {echo(peer) * 1000:.0f} ms", file=out)
        return 0
    if args.action == "find":
        return _find(peer, args, out)
    return _retrieve(settings, peer, args, out)


def _find(peer: "DicomPeer", args: argparse.Namespace, out: TextIO) -> int:
    from fiona_ops import pacs
    from fiona_ops.query import Level, build_query, parse_keys, row_of, table

    level = Level(args.level)
    query, columns = build_query(level, parse_keys(args.keys, level))
    rows = [row_of(answer, columns) for answer in pacs.find(peer, query)]
    if args.json:
        json.dump(rows, out, indent=1)
        print(file=out)
    else:
        print("\n".join(table(rows, columns)), file=out)
    return 0


def _retrieve(settings: Settings, peer: "DicomPeer", args: argparse.Namespace, out: TextIO) -> int:
    from fiona_common.nats_auth import nats_target
    from fiona_ops import retrieve

    listener = _listener(settings, args.site)
    target = retrieve.Target(listener, peer.name, nats_target(settings))
    if args.action == "move":
        node = settings.pacs_nodes[peer.name]
        dest = args.dest or node.move_aet or listener.aetitle
        fetch, how = _by_move(dest), f"moved to {dest}"
    else:
        fetch = _by_get(retrieve.InboxSink(retrieve.inbox_of(listener), peer.name))
        how = "retrieved into inbox/"

    def warn(text: str) -> None:
        print(f"fiona: warning: {text}", file=sys.stderr)

    uids = retrieve.study_uids(peer, args.study, args.accession)
    failed = 0
    for uid, doc, outcome in retrieve.retrieve_studies(peer, uids, target, fetch, warn):
        expected = "?" if doc.instances is None else str(doc.instances)
        line = f"study {uid}: {outcome.completed} of {expected} instances {how}"
        if not outcome.ok:
            failed += 1
            line += f"; {outcome.failed} failed (status 0x{outcome.status:04X})"
        print(line, file=out)
    return 1 if failed else 0


def _by_move(destination: str) -> "Retrieve":
    from fiona_ops import pacs

    def fetch(peer: "DicomPeer", study_uid: str) -> pacs.Retrieved:
        return pacs.move(peer, pacs.study_query("STUDY", study_uid), destination)

    return fetch


def _by_get(sink: "StoreHandler") -> "Retrieve":
    from fiona_ops import pacs

    def fetch(peer: "DicomPeer", study_uid: str) -> pacs.Retrieved:
        return pacs.get(peer, pacs.study_query("STUDY", study_uid), sink)

    return fetch


def _listener(settings: Settings, site: str) -> Listener:
    listeners = {listener.name: listener for listener in settings.listeners()}
    if site not in listeners:
        raise BadInput("unknown_site", f"no site {site!r}; known: {', '.join(sorted(listeners))}")
    return listeners[site]
