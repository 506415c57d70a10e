"""The REDCap data dictionaries FIONA expects, per role (``fiona redcap bootstrap`` imports them).

Field names and meanings are the original's (Incoming, DataTransferProjects, Routing,
CouplingList, AutoID and the per-project ``imaging`` instrument; fiona-spec section 8.2), plus
the fields its code wrote without the dictionaries listing them (``study_arrival_date``,
``transfer_active_proc_time``, ``project_features``, ``cl_studyinstanceuid``). Left out on
purpose: ``project_token`` (a token belongs in a secret file, not in a REDCap field) and the
test field ``leave_alone_mrn``. docs/redcap.md lists what FIONA reads and writes.
"""

from dataclasses import dataclass

DATE = "date_ymd"
DATETIME = "datetime_ymd"  # REDCap's "YYYY-MM-DD HH:MM"
YESNO = "yesno"


@dataclass(frozen=True)
class Field:
    name: str
    form: str
    label: str
    type: str = "text"
    validation: str = ""
    choices: str = ""
    identifier: bool = False
    note: str = ""

    def metadata(self) -> dict[str, str]:
        """One row of REDCap's metadata (data dictionary) in its JSON export format."""
        return {
            "field_name": self.name,
            "form_name": self.form,
            "section_header": "",
            "field_type": self.type,
            "field_label": self.label,
            "select_choices_or_calculations": self.choices,
            "field_note": self.note,
            "text_validation_type_or_show_slider_number": self.validation,
            "text_validation_min": "",
            "text_validation_max": "",
            "identifier": "y" if self.identifier else "",
            "branching_logic": "",
            "required_field": "",
            "custom_alignment": "",
            "question_number": "",
            "matrix_group_name": "",
            "matrix_ranking": "",
            "field_annotation": "",
        }


@dataclass(frozen=True)
class Dictionary:
    fields: tuple[Field, ...]
    repeating: tuple[str, ...] = ()  # repeating instruments

    @property
    def id_field(self) -> str:
        return self.fields[0].name

    def names(self) -> set[str]:
        return {f.name for f in self.fields}


_HASHED = "keyed hash (HMAC-SHA256), never the value itself"

INCOMING = Dictionary(
    (
        Field("study_instance_uid", "incoming_studies", "Study Instance UID"),
        Field("study_site", "incoming_studies", "FIONA site (listener) that received it"),
        Field("study_institution_name", "incoming_studies", "Institution name"),
        Field("study_aetitle_sender", "incoming_studies", "AE title of the sending node"),
        Field("study_aetitle_addressed", "incoming_studies", "AE title addressed on FIONA"),
        Field(
            "study_patient_name", "incoming_studies", "Patient name", identifier=True, note=_HASHED
        ),
        Field("study_patient_id", "incoming_studies", "Patient ID", identifier=True, note=_HASHED),
        Field("study_description", "incoming_studies", "Study Description"),
        Field("study_date", "incoming_studies", "Study Date"),
        Field("study_time", "incoming_studies", "Study Time"),
        Field(
            "study_accession_number",
            "incoming_studies",
            "Accession number",
            note=_HASHED,
            identifier=True,
        ),
        Field("study_arrival_date", "incoming_studies", "Arrival complete", validation=DATETIME),
        Field("study_revision", "incoming_studies", "Arrival revision", validation="integer"),
        Field("series_instance_uid", "series", "Series Instance UID"),
        Field("series_description", "series", "Series Description"),
        Field("series_modality", "series", "Modality"),
        Field("series_num_files", "series", "Number of files", validation="integer"),
        Field("series_classify_types", "series", "Classified types (JSON list)"),
        Field(
            "transfer_info_text",
            "transfers",
            "A transfer is requested when project and name "
            "are filled in and no transfer date is set (or the requested date is later).",
            type="descriptive",
        ),
        Field("transfer_requested_date", "transfers", "Transfer requested", validation=DATETIME),
        Field("transfer_project_name", "transfers", "Project to transfer to"),
        Field("transfer_name", "transfers", "Participant ID (pseudonym) in the project"),
        Field("transfer_event_name", "transfers", "Event"),
        Field("transfer_date", "transfers", "Transfer date (FIONA)", validation=DATETIME),
        Field(
            "transfer_error",
            "transfers",
            "Transfer errors (last transfer)",
            type="checkbox",
            choices="1, Anonymization error | 2, Send error | 3, Performed pixel anonymization",
        ),
        Field("transfer_mapped_uid", "transfers", "StudyInstanceUID in the pseudonymized files"),
        Field("transfer_error_message", "transfers", "Last error message", type="notes"),
        Field("transfer_active_proc_time", "transfers", "Processing time (s)", validation="number"),
        Field("transfer_status", "transfers", "FIONA's state of this transfer"),
        Field(
            "transfer_request_no",
            "transfers",
            "FIONA's request number the state belongs to",
            validation="integer",
        ),
    ),
    repeating=("series", "transfers"),
)

PROJECTS = Dictionary(
    (
        Field("record_id", "projects", "Record ID"),
        Field("project_name", "projects", "Project name (the same as on FIONA)"),
        Field(
            "project_type",
            "projects",
            "Project type",
            type="dropdown",
            choices="0, with REK | 1, no REK with non-human subjects | 2, no REK quality control"
            " or operational support | 3, publicly available dataset",
        ),
        Field("project_contact", "projects", "Contact"),
        Field("project_contact_email", "projects", "Contact email"),
        Field("project_patient_naming", "projects", "Participant ID pattern (regex)"),
        Field("project_rec_number", "projects", "Ethics approval (REK) number"),
        Field("project_rec_start_date", "projects", "Approval start", validation=DATE),
        Field("project_rec_end_date", "projects", "Approval end", validation=DATE),
        Field(
            "project_end_type",
            "projects",
            "At the end of the study",
            type="dropdown",
            choices="1, Full anonymization with continued use | 2, Delete data",
        ),
        Field("project_active", "projects", "Active imaging project?", type=YESNO),
        Field("project_import_rule_1_tag", "projects", "Header rewrite: tag (e.g. 0032,4000)"),
        Field("project_import_rule_1_regexp", "projects", "Header rewrite: regex with groups"),
        Field("project_use_autoid", "projects", "Automatic participant IDs?", type=YESNO),
        Field("project_autoid_aetitle", "projects", "AE title addressed for automatic IDs"),
        Field(
            "project_features",
            "projects",
            "Features",
            type="checkbox",
            choices="0, Remove presentation states | 1, Never mask burned-in annotations"
            " | 2, Remove secondary captures",
        ),
    )
)

ROUTING = Dictionary(
    (
        Field("record_id", "routing", "Record ID"),
        Field("routing_active", "routing", "Is this rule active?", type=YESNO),
        Field("routing_dest_project", "routing", "Destination project"),
        Field("routing_incoming_aetitle", "routing", "AE title addressed on FIONA"),
        Field("routing_sending_aetitle", "routing", "AE title of the sender"),
        Field("routing_allowed_patientid", "routing", "PatientID must match (regex)"),
        Field("routing_allowed_patientname", "routing", "PatientName must match (regex)"),
        Field("routing_event_name", "routing", "Event"),
    )
)

COUPLING = Dictionary(
    (
        Field("record_id", "coupling_list", "Record ID"),
        Field("cl_accessionnumber", "coupling_list", "AccessionNumber to match"),
        Field("cl_studyinstanceuid", "coupling_list", "StudyInstanceUID to match"),
        Field("cl_projectname", "coupling_list", "Project"),
        Field("cl_subjectid", "coupling_list", "Participant ID"),
        Field("cl_eventname", "coupling_list", "Event"),
        Field("cl_date", "coupling_list", "Entry created", validation=DATETIME),
    )
)

AUTOID = Dictionary(
    (
        Field("record_id", "autoid", "Record ID"),
        Field("autoid_project_name", "autoid", "Project"),
        Field("autoid_hash", "autoid", "Keyed hash of the PatientID", identifier=True),
        Field("autoid_value", "autoid", "The participant ID", identifier=True),
        Field(
            "autoid_method",
            "autoid",
            "Method",
            type="dropdown",
            choices="1, Random ID based on project ID pattern",
        ),
    )
)

RESEARCH_PROJECT = Dictionary(
    (
        Field("record_id", "participant", "Participant ID"),
        Field("first_name", "participant", "First name (the participant ID)"),
        Field("last_name", "participant", "Last name (the participant ID)"),
        Field("img_study_instance_uid", "imaging", "StudyInstanceUID (pseudonymized)"),
        Field("img_event_name", "imaging", "Event"),
        Field("img_study_description", "imaging", "Study description"),
        Field("img_transfer_date", "imaging", "Delivered", validation=DATETIME),
    ),
    repeating=("imaging",),
)

BY_ROLE = {
    "incoming": INCOMING,
    "projects": PROJECTS,
    "routing": ROUTING,
    "coupling": COUPLING,
    "autoid": AUTOID,
}


def for_role(role: str) -> Dictionary:
    return RESEARCH_PROJECT if role.startswith("project.") else BY_ROLE[role]
