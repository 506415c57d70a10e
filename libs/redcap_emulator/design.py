"""The shape of one emulated project: its fields, instruments, arms, events and repeating setup.

Everything here is read-only data loaded per request; the store builds it, the API reads it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property

# Keys of a metadata row as REDCap exports them (JSON keys and CSV header of content=metadata).
METADATA_COLUMNS: tuple[str, ...] = (
    "field_name",
    "form_name",
    "section_header",
    "field_type",
    "field_label",
    "select_choices_or_calculations",
    "field_note",
    "text_validation_type_or_show_slider_number",
    "text_validation_min",
    "text_validation_max",
    "identifier",
    "branching_logic",
    "required_field",
    "custom_alignment",
    "question_number",
    "matrix_group_name",
    "matrix_ranking",
    "field_annotation",
)

CHECKBOX_SEPARATOR = "___"
FORM_STATUS_LABELS = {"0": "Incomplete", "1": "Unverified", "2": "Complete"}
_FIXED_CHOICES = {
    "yesno": {"1": "Yes", "0": "No"},
    "truefalse": {"1": "True", "0": "False"},
}
_CHOICE_TYPES = frozenset({"dropdown", "radio", "checkbox"})
_CHECKBOX_CODE_UNSAFE = re.compile(r"[^a-z0-9_]")


def parse_choices(text: str) -> dict[str, str]:
    """Choice codes and labels from the dictionary's ``code, label | code, label`` notation."""
    choices: dict[str, str] = {}
    for item in text.split("|"):
        code, _, label = item.partition(",")
        if code.strip():
            choices[code.strip()] = label.strip()
    return choices


def checkbox_column(field_name: str, code: str) -> str:
    """The export/import column of one checkbox option (``name___code``)."""
    # REDCap lower-cases the code and replaces characters that cannot appear in a variable name.
    return f"{field_name}{CHECKBOX_SEPARATOR}{_CHECKBOX_CODE_UNSAFE.sub('_', code.lower())}"


def form_label(form: str) -> str:
    """The label REDCap derives from an instrument name uploaded in a data dictionary."""
    return " ".join(word[:1].upper() + word[1:] for word in form.split("_"))


@dataclass(frozen=True)
class Field:
    """One row of the data dictionary."""

    attributes: dict[str, str]

    @property
    def name(self) -> str:
        return self.attributes["field_name"]

    @property
    def form(self) -> str:
        return self.attributes["form_name"]

    @property
    def field_type(self) -> str:
        return self.attributes["field_type"]

    @property
    def validation(self) -> str:
        return self.attributes.get("text_validation_type_or_show_slider_number", "")

    @property
    def holds_data(self) -> bool:
        return self.field_type != "descriptive"

    @property
    def is_checkbox(self) -> bool:
        return self.field_type == "checkbox"

    def choices(self) -> dict[str, str]:
        """Codes and labels for dropdown, radio, checkbox, yesno and truefalse fields."""
        if self.field_type in _FIXED_CHOICES:
            return dict(_FIXED_CHOICES[self.field_type])
        if self.field_type in _CHOICE_TYPES:
            return parse_choices(self.attributes.get("select_choices_or_calculations", ""))
        return {}

    def columns(self) -> list[str]:
        """The flat export columns of this field (one per option for checkboxes)."""
        if not self.holds_data:
            return []
        if self.is_checkbox:
            return [checkbox_column(self.name, code) for code in self.choices()]
        return [self.name]


@dataclass(frozen=True)
class Arm:
    number: int
    name: str


@dataclass(frozen=True)
class Event:
    event_id: int
    unique_name: str
    name: str
    arm: int
    custom_label: str = ""
    days_offset: int = 1
    offset_min: int = 0
    offset_max: int = 0


@dataclass(frozen=True)
class ProjectInfo:
    project_id: int
    title: str
    longitudinal: bool
    production: bool
    autonumbering: bool
    creation_time: str
    production_time: str = ""


@dataclass(frozen=True)
class Column:
    """What a flat column means: the field behind it, its form, and a checkbox code if any."""

    name: str
    form: str
    field: Field | None  # None for ``<form>_complete``
    choice: str = ""

    @property
    def is_form_status(self) -> bool:
        return self.field is None


@dataclass(frozen=True)
class Design:
    """A project's setup. ``event`` is ``""`` throughout for classic (non-longitudinal) projects."""

    info: ProjectInfo
    fields: tuple[Field, ...]
    arms: tuple[Arm, ...] = ()
    events: tuple[Event, ...] = ()
    designations: frozenset[tuple[str, str]] = frozenset()  # (unique event name, form)
    # (event, form) -> custom label; form "" marks a repeating event
    repeating: Mapping[tuple[str, str], str] = field(default_factory=dict)

    @property
    def record_id_field(self) -> str:
        return self.fields[0].name

    @cached_property
    def forms(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(f.form for f in self.fields))

    @cached_property
    def _fields_by_name(self) -> dict[str, Field]:
        return {f.name: f for f in self.fields}

    @cached_property
    def _columns(self) -> dict[str, Column]:
        columns: dict[str, Column] = {}
        for f in self.fields:
            if f.is_checkbox:
                for code in f.choices():
                    columns[checkbox_column(f.name, code)] = Column(
                        checkbox_column(f.name, code), f.form, f, code
                    )
            elif f.holds_data:
                columns[f.name] = Column(f.name, f.form, f)
        for form in self.forms:
            columns[f"{form}_complete"] = Column(f"{form}_complete", form, None)
        return columns

    def field(self, name: str) -> Field | None:
        return self._fields_by_name.get(name)

    def column(self, name: str) -> Column | None:
        """The flat column called ``name`` (fields, checkbox options, form status fields)."""
        return self._columns.get(name)

    def form_columns(self, form: str) -> list[str]:
        """Columns of a form in dictionary order, its ``<form>_complete`` last."""
        return [c.name for c in self._columns.values() if c.form == form and c.field] + [
            f"{form}_complete"
        ]

    def fields_of(self, form: str) -> list[Field]:
        return [f for f in self.fields if f.form == form]

    @property
    def event_names(self) -> tuple[str, ...]:
        """Unique event names in order; ``("",)`` for a classic project."""
        if not self.info.longitudinal:
            return ("",)
        return tuple(e.unique_name for e in self.events)

    def event(self, unique_name: str) -> Event | None:
        return next((e for e in self.events if e.unique_name == unique_name), None)

    def is_designated(self, event: str, form: str) -> bool:
        return not self.info.longitudinal or (event, form) in self.designations

    def is_repeating_form(self, event: str, form: str) -> bool:
        return bool(form) and (event, form) in self.repeating

    def is_repeating_event(self, event: str) -> bool:
        return self.info.longitudinal and (event, "") in self.repeating

    @property
    def has_repeating(self) -> bool:
        return bool(self.repeating)

    def form_label(self, form: str) -> str:
        return form_label(form)

    def event_label(self, unique_name: str) -> str:
        event = self.event(unique_name)
        return event.name if event else unique_name
