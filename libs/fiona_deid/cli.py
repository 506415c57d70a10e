"""``fiona deid``: de-identify files offline with a project's settings, show the plan or the table.

    fiona deid --project P --projects projects.json --key-file KEY [--subject S] [--event E] IN OUT
    fiona deid --project P --projects projects.json --what-if IN
    fiona deid --project P --projects projects.json --list-profile
    fiona deid --profile recommended --option clean-graphics --list-profile

Exit codes: 0 every object emitted or dropped by policy, 1 some quarantined, 2 bad configuration.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.errors import InvalidDicomError

from fiona_common.errors import ConfigError
from fiona_common.secret_files import read_secret
from fiona_deid.files import deidentify_file, input_files
from fiona_deid.keyed import MIN_KEY_BYTES
from fiona_deid.profile import effective_table, plan
from fiona_deid.records import Outcome
from fiona_deid.settings import DeidSettings, Preset, build_settings


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="fiona deid", description="De-identify DICOM files with a project's settings."
    )
    parser.add_argument("paths", nargs="*", type=Path, help="IN (file or folder) and OUT folder")
    parser.add_argument("--project", help="project name (from --projects, or just the name)")
    parser.add_argument("--projects", type=Path, help="the projects file (JSON)")
    parser.add_argument("--profile", choices=[p.value for p in Preset], help="without --projects")
    parser.add_argument(
        "--option", action="append", default=[], help="a PS3.15 option, repeatable", metavar="OPT"
    )
    parser.add_argument("--key-file", type=Path, help=f"secret key, at least {MIN_KEY_BYTES} bytes")
    parser.add_argument("--subject", help="participant ID the output carries (needed to write)")
    parser.add_argument("--event", default="", help="event name (Clinical Trial Time Point)")
    parser.add_argument("--what-if", action="store_true", help="print the plan, write nothing")
    parser.add_argument("--list-profile", action="store_true", help="print the effective table")
    parser.add_argument("--json", action="store_true", help="machine-readable output")
    parser.add_argument("--audit", type=Path, help="write each object's audit as a JSON line")
    return parser


def main(argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        if args.list_profile:
            return _list_profile(settings, args.json)
        if args.what_if:
            return _what_if(args, settings)
        return _run(args, settings)
    except ConfigError as err:
        print(f"fiona deid: {err}", file=sys.stderr)
        return 2


def _settings(args: argparse.Namespace) -> DeidSettings:
    if args.projects is None:
        return build_settings(args.project or "PROJECT", args.profile or "recommended", args.option)
    project = _project_entry(args.projects, args.project)
    deid = project.get("deidentification", {})
    features = project.get("features", {})
    rewrite = project.get("header_rewrite")
    return build_settings(
        project=project["name"],
        preset=deid.get("profile", "basic"),
        options=[*deid.get("options", []), *args.option],
        safe_private=deid.get("safe_private", []),
        date_shift_days=int(deid.get("date_shift_days", 42)),
        drop_presentation_states=bool(features.get("drop_presentation_states", False)),
        drop_secondary_captures=bool(features.get("drop_secondary_captures", False)),
        never_mask_burned_in=bool(features.get("never_mask_burned_in", False)),
        header_rewrite=(rewrite["tag"], rewrite["regex"]) if rewrite else None,
    )


def _project_entry(path: Path, name: str | None) -> dict[str, Any]:
    """The project's entry of the projects file (read here: the engine imports no services)."""
    try:
        catalog = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path}: {err}") from None
    projects = {p.get("name"): p for p in catalog.get("projects", []) if isinstance(p, dict)}
    if name not in projects:
        raise ConfigError(f"{path}: no project named {name!r}")
    entry: dict[str, Any] = projects[name]
    return entry


def _list_profile(settings: DeidSettings, as_json: bool) -> int:
    rows = effective_table(settings)
    if as_json:
        print(json.dumps([row.__dict__ for row in rows], indent=1))
        return 0
    options = ", ".join(sorted(settings.effective_options)) or "none"
    print(f"# project {settings.project}: preset {settings.preset}, options: {options}")
    for row in rows:
        print(f"{row.tag:22} {row.action:19} {row.meaning:48} {row.source:30} {row.name}")
    return 0


def _what_if(args: argparse.Namespace, settings: DeidSettings) -> int:
    if not args.paths:
        raise ConfigError("--what-if needs an input file or folder")
    for path in input_files(args.paths[0]):
        try:
            ds = dcmread(path)
        except (InvalidDicomError, OSError) as err:
            print(f"{path}: not readable as DICOM: {err}")
            continue
        subject = args.subject or str(ds.get("PatientID", "")) or "SUBJECT"
        result = plan(ds, settings, subject, args.event)
        print(f"{path}: {result.outcome} {result.reason}".rstrip())
        for entry in result.actions:
            print(f"  {entry.tag_text:40} {entry.keyword:40} {entry.done:9} {entry.why}")
    return 0


def _run(args: argparse.Namespace, settings: DeidSettings) -> int:
    if len(args.paths) != 2:
        raise ConfigError("give IN (file or folder) and OUT (folder)")
    if not args.subject:
        # Never a default taken from the input: that would be the patient's own ID.
        raise ConfigError("--subject is needed: the participant ID the output carries")
    key = _read_key(args.key_file)
    source, out_dir = args.paths
    counts = {outcome: 0 for outcome in Outcome}
    audit = args.audit.open("w") if args.audit else None
    for path in input_files(source):
        result, written = deidentify_file(path, out_dir, settings, key, args.subject, args.event)
        counts[result.outcome] += 1
        if result.outcome is not Outcome.EMITTED:
            print(f"{path}: {result.outcome}: {result.reason}")
        if audit is not None:
            record = {
                "input": str(path),
                "output": str(written) if written else None,
                "outcome": result.outcome,
                "reason": result.reason,
                "elements": [entry.as_dict() for entry in result.audit],
            }
            audit.write(json.dumps(record) + "\n")
    if audit is not None:
        audit.close()
    print(", ".join(f"{n} {o}" for o, n in counts.items()))
    return 1 if counts[Outcome.QUARANTINED] else 0


def _read_key(path: Path | None) -> bytes:
    if path is None:
        raise ConfigError("--key-file is needed to write de-identified objects")
    return read_secret(path, "key", MIN_KEY_BYTES)


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
