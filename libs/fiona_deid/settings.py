"""A project's de-identification settings: preset, PS3.15 options, private allow-list, policies.

The engine never imports the project catalog; :func:`settings_from_project` reads what it needs
from any object shaped like ``fiona_common.projects.Project`` (attribute access only).
"""

import re
from dataclasses import dataclass, field
from enum import StrEnum

from pydicom.datadict import tag_for_keyword

from fiona_common.errors import ConfigError


class Option(StrEnum):
    """The ten PS3.15 Annex E options that are columns of Table E.1-1 (names used in config)."""

    RETAIN_SAFE_PRIVATE = "retain-safe-private"
    RETAIN_UIDS = "retain-uids"
    RETAIN_DEVICE_IDENTITY = "retain-device-identity"
    RETAIN_INSTITUTION_IDENTITY = "retain-institution-identity"
    RETAIN_PATIENT_CHARACTERISTICS = "retain-patient-characteristics"
    RETAIN_LONG_FULL_DATES = "retain-long-full-dates"
    RETAIN_LONG_MODIFIED_DATES = "retain-long-modified-dates"
    CLEAN_DESCRIPTORS = "clean-descriptors"
    CLEAN_STRUCTURED_CONTENT = "clean-structured-content"
    CLEAN_GRAPHICS = "clean-graphics"


class Preset(StrEnum):
    BASIC = "basic"  # the basic profile, plus whatever options the project lists
    RECOMMENDED = "recommended"  # TCIA practice
    FIONA = "fiona"  # the original FIONA's observable rules (spec section 7.5)


class DateOffset(StrEnum):
    """Where the day offset of the modified-dates option comes from."""

    PROJECT = "project"  # keyed: HMAC(key, project)
    PARTICIPANT = "participant"  # keyed: HMAC(key, project, participant)
    FIXED = "fixed"  # date_shift_days for everyone (the original's +42)


class Policy(StrEnum):
    """What happens to an object class that may carry identifying pixels or graphics."""

    DROP = "drop"
    QUARANTINE = "quarantine"
    PASS = "pass"


RECOMMENDED_OPTIONS = (
    Option.RETAIN_LONG_MODIFIED_DATES,
    Option.RETAIN_PATIENT_CHARACTERISTICS,
    Option.RETAIN_DEVICE_IDENTITY,
    Option.RETAIN_SAFE_PRIVATE,
    Option.CLEAN_DESCRIPTORS,
)

# Private elements kept by retain-safe-private when a project names none: what diffusion and
# distortion correction read from Siemens data (CSA image/series headers, mosaic and b-values).
# The leak guard still checks their bytes against the input's identifiers.
DEFAULT_SAFE_PRIVATE = (
    "SIEMENS CSA HEADER:0029,xx08",
    "SIEMENS CSA HEADER:0029,xx09",
    "SIEMENS CSA HEADER:0029,xx10",
    "SIEMENS CSA HEADER:0029,xx18",
    "SIEMENS CSA HEADER:0029,xx19",
    "SIEMENS CSA HEADER:0029,xx20",
    "SIEMENS MR HEADER:0019,xx08",
    "SIEMENS MR HEADER:0019,xx0a",
    "SIEMENS MR HEADER:0019,xx0b",
    "SIEMENS MR HEADER:0019,xx0c",
    "SIEMENS MR HEADER:0019,xx0d",
    "SIEMENS MR HEADER:0019,xx0e",
    "SIEMENS MR HEADER:0019,xx0f",
    "SIEMENS MR HEADER:0019,xx27",
    "SIEMENS MR HEADER:0019,xx28",
    "SIEMENS MR HEADER:0019,xx29",
)

_SAFE_ENTRY = re.compile(
    r"^(?P<creator>[^:]+?)(?::(?P<group>[0-9a-fA-F]{4}),xx(?P<el>[0-9a-fA-F]{2}))?$"
)


@dataclass(frozen=True)
class SafePrivate:
    """One allow-list entry: a whole private block, or one element of it (group, offset)."""

    creator: str
    group: int | None = None
    offset: int | None = None

    @classmethod
    def parse(cls, text: str) -> "SafePrivate":
        """``"CREATOR"`` or ``"CREATOR:gggg,xxee"`` (xx stands for the block number)."""
        match = _SAFE_ENTRY.match(text.strip())
        if not match:
            raise ConfigError(f"safe-private entry {text!r}: expected CREATOR or CREATOR:gggg,xxee")
        group = match["group"]
        if group is not None and int(group, 16) % 2 == 0:
            raise ConfigError(f"safe-private entry {text!r}: private groups are odd")
        return cls(
            creator=match["creator"].strip(),
            group=int(group, 16) if group else None,
            offset=int(match["el"], 16) if match["el"] else None,
        )


@dataclass(frozen=True)
class HeaderRewrite:
    """Replace one top-level element by the capture groups of ``regex`` (spec 7.11)."""

    tag: int
    regex: str


@dataclass(frozen=True)
class DeidSettings:
    """Everything the engine needs to know about a project. Frozen so compiled plans cache."""

    project: str
    preset: Preset = Preset.RECOMMENDED
    options: frozenset[Option] = field(default_factory=frozenset)
    safe_private: tuple[SafePrivate, ...] = ()
    date_offset: DateOffset = DateOffset.PROJECT
    date_shift_days: int = 42
    burned_in: Policy = Policy.QUARANTINE
    secondary_capture: Policy = Policy.QUARANTINE
    presentation_state: Policy = Policy.QUARANTINE
    header_rewrite: HeaderRewrite | None = None

    def __post_init__(self) -> None:
        if not self.project:
            raise ConfigError("de-identification needs a project name")
        full, modified = Option.RETAIN_LONG_FULL_DATES, Option.RETAIN_LONG_MODIFIED_DATES
        if full in self.options and modified in self.options:
            raise ConfigError(f"options {full} and {modified} exclude each other")
        if self.preset is Preset.FIONA and self.options:
            raise ConfigError("the fiona preset has fixed rules: it takes no options")

    @property
    def effective_options(self) -> frozenset[Option]:
        """The options applied: the preset's plus the project's."""
        if self.preset is Preset.RECOMMENDED:
            return self.options | frozenset(RECOMMENDED_OPTIONS)
        return self.options

    @property
    def effective_safe_private(self) -> tuple[SafePrivate, ...]:
        if Option.RETAIN_SAFE_PRIVATE not in self.effective_options:
            return ()
        return self.safe_private or tuple(SafePrivate.parse(e) for e in DEFAULT_SAFE_PRIVATE)


def parse_tag(text: str) -> int:
    """``"0032,4000"``, ``"(0032,4000)"`` or a keyword (``"SeriesDescription"``) → the tag."""
    match = re.fullmatch(r"\(?([0-9a-fA-F]{4}),?([0-9a-fA-F]{4})\)?", text.strip())
    if match:
        return int(match[1] + match[2], 16)
    tag = tag_for_keyword(text.strip())
    if tag is None:
        raise ConfigError(f"not a DICOM tag or keyword: {text!r} (expected gggg,eeee)")
    return tag


# FIONA-specific entries a project may put in its options list besides the ten PS3.15 ones.
_OFFSET_OPTIONS = {
    "date-offset-project": DateOffset.PROJECT,
    "date-offset-participant": DateOffset.PARTICIPANT,
    "date-offset-fixed": DateOffset.FIXED,
}


def build_settings(
    project: str,
    preset: str,
    options: list[str] | tuple[str, ...] = (),
    *,
    safe_private: list[str] | tuple[str, ...] = (),
    date_shift_days: int = 42,
    drop_presentation_states: bool = False,
    drop_secondary_captures: bool = False,
    never_mask_burned_in: bool = False,
    header_rewrite: tuple[str, str] | None = None,
) -> DeidSettings:
    """Settings from plain config values; :class:`ConfigError` names what is wrong."""
    try:
        chosen = Preset(preset)
    except ValueError:
        raise ConfigError(f"unknown de-identification profile {preset!r}") from None
    offset = DateOffset.FIXED if chosen is Preset.FIONA else DateOffset.PROJECT
    picked: set[Option] = set()
    for name in options:
        if name in _OFFSET_OPTIONS:
            offset = _OFFSET_OPTIONS[name]
        elif name.startswith("safe-private="):
            safe_private = (*safe_private, name.removeprefix("safe-private="))
        else:
            try:
                picked.add(Option(name))
            except ValueError:
                raise ConfigError(f"unknown de-identification option {name!r}") from None
    rewrite = None
    if header_rewrite is not None:
        rewrite = HeaderRewrite(tag=parse_tag(header_rewrite[0]), regex=header_rewrite[1])
    return DeidSettings(
        project=project,
        preset=chosen,
        options=frozenset(picked),
        safe_private=tuple(SafePrivate.parse(e) for e in safe_private),
        date_offset=offset,
        date_shift_days=date_shift_days,
        presentation_state=Policy.DROP if drop_presentation_states else Policy.QUARANTINE,
        secondary_capture=Policy.DROP if drop_secondary_captures else Policy.QUARANTINE,
        burned_in=Policy.PASS if never_mask_burned_in else Policy.QUARANTINE,
        header_rewrite=rewrite,
    )


def settings_from_project(project: object) -> DeidSettings:
    """Settings from a catalog ``Project`` (duck-typed: name, deidentification, features, ...)."""
    deid = getattr(project, "deidentification", None)
    features = getattr(project, "features", None)
    rewrite = getattr(project, "header_rewrite", None)
    return build_settings(
        project=str(getattr(project, "name", "")),
        preset=str(getattr(deid, "profile", Preset.RECOMMENDED)),
        options=list(getattr(deid, "options", [])),
        safe_private=list(getattr(deid, "safe_private", [])),
        date_shift_days=int(getattr(deid, "date_shift_days", 42)),
        drop_presentation_states=bool(getattr(features, "drop_presentation_states", False)),
        drop_secondary_captures=bool(getattr(features, "drop_secondary_captures", False)),
        never_mask_burned_in=bool(getattr(features, "never_mask_burned_in", False)),
        header_rewrite=(rewrite.tag, rewrite.regex) if rewrite is not None else None,
    )
