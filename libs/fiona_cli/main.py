"""The ``fiona`` command line (shared/CONTRACT.md section 2)."""

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from pathlib import Path

from fiona_common.errors import ConfigError, FionaError
from fiona_common.process import die_with_supervisor
from fiona_common.settings import Settings
from fiona_ops.cli import add_pacs_actions, run_pacs

# Service name on the command line -> module whose ``main(settings)`` runs it.
SERVICES: dict[str, str] = {
    "receiver": "services.receiver.main",
    "classifier": "services.classifier.main",
    "arrival": "services.arrival.main",
    "redcap_sync": "services.redcap_sync.main",
    "exporter": "services.exporter.main",
    "heartbeat": "fiona_ops.heartbeat",
}


def _settings(args: argparse.Namespace) -> Settings:
    overrides = {"datadir": Path(args.data).resolve()} if getattr(args, "data", None) else {}
    config = Path(args.config) if getattr(args, "config", None) else None
    if config is None and overrides:
        default = overrides["datadir"] / "config" / "config.json"
        config = default if default.exists() else None
    return Settings.load(config, **overrides)


def cmd_run(args: argparse.Namespace) -> int:
    settings = _settings(args)
    name = args.service.replace("-", "_")
    if name == "receiver":
        # Must happen before prometheus-client is imported (with the service module).
        from services.receiver.workers import prepare_metrics_dir

        prepare_metrics_dir(settings)
    module = importlib.import_module(SERVICES[name])
    service_main: Callable[[Settings], int] = module.main
    return service_main(settings)


def cmd_up(args: argparse.Namespace) -> int:
    from fiona_cli.supervisor import run_supervisor

    return run_supervisor(_settings(args), list(SERVICES))


def cmd_status(args: argparse.Namespace) -> int:
    from fiona_cli.status import print_status

    return print_status(_settings(args), list(SERVICES), as_json=args.json)


def cmd_classify(args: argparse.Namespace) -> int:
    from services.classifier.offline import classify_paths, report
    from services.classifier.rules import RuleSet

    settings = _settings(args)
    rules_file = Path(args.rules) if args.rules else settings.classifier.rules_file
    rules = RuleSet.load(rules_file) if rules_file else RuleSet.default()
    missing = [p for p in args.paths if not Path(p).exists()]
    if missing:
        print(f"fiona: no such file or folder: {missing[0]}", file=sys.stderr)
        return 1
    results, skipped = classify_paths(rules, [Path(p) for p in args.paths])
    for line in report(results, args.explain):
        print(line)
    if skipped:
        print(f"({skipped} files were not readable DICOM and were skipped)", file=sys.stderr)
    return 0


def cmd_complete(args: argparse.Namespace) -> int:
    from services.arrival.force import force_complete

    print(force_complete(_settings(args), args.study_uid, args.site))
    return 0


def cmd_assign(args: argparse.Namespace) -> int:
    from services.redcap_sync.cli import assign_study

    settings = _settings(args)
    print(assign_study(settings, args.study_uid, args.project, args.subject, args.event, args.site))
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    from services.redcap_sync.cli import list_studies

    lines = list_studies(_settings(args), args.all, args.clear)
    print("\n".join(lines) if lines else "(no studies)")
    return 0


def cmd_coupling(args: argparse.Namespace) -> int:
    from services.redcap_sync.cli import import_coupling

    stored, bad = import_coupling(_settings(args), Path(args.file))
    for problem in bad:
        print(f"{args.file}: {problem}", file=sys.stderr)
    print(f"{stored} coupling entries stored, {len(bad)} rows refused")
    return 1 if bad else 0


def cmd_redcap(args: argparse.Namespace) -> int:
    from services.redcap_sync.cli import redcap_setup, redcap_sync_now

    settings = _settings(args)
    if args.action == "sync":
        outcome = redcap_sync_now(settings)
        for what, result in outcome.items():
            print(f"{what}: {result}")
        return 0 if all(r == "ok" for r in outcome.values()) else 1
    findings = redcap_setup(settings, args.action)
    for finding in findings:
        print(f"{finding.role}: {'ok' if finding.ok else 'PROBLEM'}")
        for line in finding.lines:
            print(f"  {line}")
    return 0 if all(f.ok for f in findings) else 1


def cmd_pacs(args: argparse.Namespace) -> int:
    return run_pacs(_settings(args), args)


def cmd_janitor(args: argparse.Namespace) -> int:
    from fiona_ops.janitor_service import run_command, run_loop

    settings = _settings(args)
    if args.loop and (args.dry_run or args.force):
        raise FionaError("--loop runs unattended: it takes neither --dry-run nor --force")
    if args.loop:
        return run_loop(settings)
    return run_command(settings, dry_run=args.dry_run, force=args.force)


def cmd_backup(args: argparse.Namespace) -> int:
    from fiona_ops.backup import run_command

    archive, force = getattr(args, "archive", False), getattr(args, "force", False)
    return run_command(args.action, Path(args.path), lambda: _settings(args), archive, force)


def cmd_reprocess(args: argparse.Namespace) -> int:
    from fiona_ops.reprocess import Selection, run_reprocess

    selection = Selection(tuple(args.study_uids), args.since, args.patient_hash, args.site)
    return run_reprocess(_settings(args), selection, args.dry_run)


def cmd_deid(argv: list[str]) -> int:
    """``fiona deid ARGS``: ARGS go to the de-identification command line, except --config and
    --data, which choose FIONA's settings as for every command."""
    from fiona_common.projects import projects_path
    from fiona_common.secret_files import read_key
    from fiona_deid.cli import main as deid_main
    from services.exporter.main import key_path

    ours = argparse.ArgumentParser(add_help=False)
    ours.add_argument("--config")
    ours.add_argument("--data")
    args, argv = ours.parse_known_args(argv)
    if "-h" in argv or "--help" in argv:
        return deid_main(["--help"])
    settings = _settings(args)
    # By default the same projects file and key as the exporter: the same output, offline.
    if "--projects" not in argv and "--profile" not in argv:
        argv += ["--projects", str(projects_path(settings))]
    if "--key-file" not in argv:
        key = key_path(settings)
        if settings.exporter.key_file is None:
            read_key(key, create=True)  # the exporter's default key, made once either way
        argv += ["--key-file", str(key)]
    return deid_main(argv)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiona",
        description="FIONA research-imaging gateway",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(
        name: str, func: Callable[[argparse.Namespace], int], text: str
    ) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("--config", metavar="FILE", help="config.json (default: $FIONA_CONFIG)")
        p.add_argument("--data", metavar="DIR", help="data directory (overrides DATADIR)")
        p.set_defaults(func=func)
        return p

    add("up", cmd_up, "start NATS and every service, restart crashed ones, stop on Ctrl-C")
    run = add("run", cmd_run, "run one service in the foreground")
    run.add_argument("service", choices=[s.replace("_", "-") for s in SERVICES])
    classify = add("classify", cmd_classify, "classify DICOM files or folders with the rule set")
    classify.add_argument("paths", nargs="+", metavar="PATH")
    classify.add_argument("--rules", metavar="FILE", help="a classifyRules.json to test")
    classify.add_argument(
        "--explain",
        action="store_true",
        help="show for each rule whether it matched, or the condition it failed",
    )
    complete = add("complete", cmd_complete, "declare a study in flight complete now (forced)")
    complete.add_argument("study_uid", metavar="STUDY_UID")
    complete.add_argument("--site", default="default", help="SITES project (default: default)")
    assign = add("assign", cmd_assign, "assign a complete study to a project and participant")
    assign.add_argument("study_uid", metavar="STUDY_UID")
    assign.add_argument("--project", required=True)
    assign.add_argument("--subject", required=True, help="participant ID (the pseudonym)")
    assign.add_argument("--event", default="", help="the project's event (visit) name")
    assign.add_argument("--site", default="default", help="SITES project (default: default)")
    studies = add("studies", cmd_studies, "list complete studies that are not assigned yet")
    studies.add_argument("--all", action="store_true", help="assigned ones too, with transfers")
    studies.add_argument(
        "--clear", action="store_true", help="show PatientID/Name in clear (this host only)"
    )
    couple = add("coupling", cmd_coupling, "import a coupling list (CSV)")
    couple.add_argument("action", choices=["import"])
    couple.add_argument("file", metavar="FILE")
    redcap = add("redcap", cmd_redcap, "REDCap: sync now, bootstrap or check its projects")
    redcap.add_argument(
        "action",
        choices=["sync", "bootstrap", "check", "emulator"],
        help="emulator: a REDCap API emulator for tests and demos (fiona redcap emulator -h)",
    )
    pacs = add("pacs", cmd_pacs, "query/retrieve a configured PACS node: echo, find, move, get")
    add_pacs_actions(pacs)
    janitor = add("janitor", cmd_janitor, "free disk space: old delivered studies, leftovers")
    janitor.add_argument("--dry-run", action="store_true", help="show the plan, change nothing")
    janitor.add_argument(
        "--force", action="store_true", help="also studies not delivered everywhere (or unassigned)"
    )
    janitor.add_argument(
        "--loop", action="store_true", help="a round every JANITOR.INTERVAL_SECONDS (fiona up)"
    )
    backup = add("backup", cmd_backup, "back up, verify or restore FIONA's state and archive")
    backup_actions = backup.add_subparsers(dest="action", required=True, metavar="ACTION")
    for action, where, text in (
        ("create", "DEST", "write a new backup into the folder DEST (created if missing)"),
        ("verify", "SRC", "check a backup's files against its manifest, restore nothing"),
        ("restore", "SRC", "put a backup back into empty data directories and an empty NATS"),
    ):
        p = backup_actions.add_parser(action, help=text, description=text)
        what = "a folder of backups" if where == "DEST" else "a backup, or a folder of them"
        p.add_argument("path", metavar=where, help=f"{what} (the newest is the one used)")
        p.add_argument("--config", metavar="FILE", default=argparse.SUPPRESS)
        p.add_argument("--data", metavar="DIR", default=argparse.SUPPRESS)
        if action == "create":
            p.add_argument(
                "--archive",
                action="store_true",
                help="also site/archive, outbox and quarantine (only files new since the last "
                "backup in DEST are copied)",
            )
        if action == "restore":
            p.add_argument("--force", action="store_true", help="overwrite what is in the way")
    reprocess = add("reprocess", cmd_reprocess, "send archived studies through the pipeline again")
    reprocess.add_argument("study_uids", nargs="*", metavar="STUDY_UID")
    reprocess.add_argument(
        "--since", type=float, metavar="DAYS", help="studies with objects archived in DAYS days"
    )
    reprocess.add_argument(
        "--patient-hash", metavar="H", help="a patient's keyed hash (as fiona studies shows it)"
    )
    reprocess.add_argument("--site", help="only this SITES project's data directory")
    reprocess.add_argument("--dry-run", action="store_true", help="list, count, publish nothing")
    # Listed for --help; main() hands its arguments to the de-identification command line.
    add("deid", cmd_status, "de-identify files offline with a project's settings (fiona deid -h)")
    status = add("status", cmd_status, "show each service's health; non-zero exit if unhealthy")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: list[str] | None = None) -> int:
    # Nothing FIONA creates is for other users: folders made as parents by mkdir(parents=True),
    # and files of libraries and child processes (nats-server's store), included.
    os.umask(0o027)
    die_with_supervisor()
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["deid"]:
        return _guarded(lambda: cmd_deid(argv[1:]))
    if argv[:2] == ["redcap", "emulator"]:
        from redcap_emulator.cli import main as emulator_main

        return _guarded(lambda: emulator_main(argv[2:]))
    args = build_parser().parse_args(argv)
    return _guarded(lambda: args.func(args))


def _guarded(command: Callable[[], int]) -> int:
    try:
        return command()
    except ConfigError as err:
        print(f"fiona: configuration error: {err}", file=sys.stderr)
        return 2
    except FionaError as err:
        print(f"fiona: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
