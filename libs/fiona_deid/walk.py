"""One pass over an object's elements, applying the compiled rules at every nesting level.

Elements are looked at through ``Dataset.keys()`` and ``get_item()``, which hand back pydicom's
raw (still encoded) elements: an element the rules keep is never decoded and is written back
byte for byte. Only the elements an action changes are decoded. Measured on the benchmark
corpus, decoding every element would cost more than the whole rule pass.
"""

from collections.abc import Callable

from pydicom.datadict import dictionary_VR
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from fiona_deid.elements import ASCII_VRS, ascii_values, put_ascii, put_empty
from fiona_deid.keyed import KeyedMapper, fiona_digest, shift_date
from fiona_deid.records import AuditEntry, Done
from fiona_deid.settings import SafePrivate
from fiona_deid.table import CompiledRules, Rule
from fiona_deid.values import (
    BINARY_VRS,
    DUMMY_BY_VR,
    KNOWN_BODY_PARTS,
    TEXT_VRS,
    clean_text,
    limited,
)

_UNLISTED = Rule("K", "unlisted")
_GROUP_LENGTH = Rule("X", "group length (retired)")
_ILLEGAL_GROUPS = {0x0001, 0x0003, 0x0005, 0x0007, 0xFFFF}


class Walker:
    """Applies rules to one object; collects the audit and the original UIDs and dates replaced
    (the leak guard checks the output for them)."""

    def __init__(
        self,
        rules: CompiledRules,
        mapper: KeyedMapper,
        day_offset: int | None,
        safe_private: tuple[SafePrivate, ...],
        scrub_words: tuple[str, ...],
        placeholders: dict[str, str],
    ) -> None:
        self.rules = rules
        self.mapper = mapper
        self.day_offset = day_offset
        self.safe_private = safe_private
        self.scrub_words = scrub_words
        self.placeholders = placeholders  # FIONA "set" values and the study UID for StudyID
        self.audit: list[AuditEntry] = []
        self.original_uids: set[str] = set()
        self.original_dates: set[str] = set()
        self._actions: dict[str, Callable[[Dataset, int, str, Rule, str], None]] = {
            "Z": self._empty,
            "D": self._dummy,
            "U": self._replace_uid,
            "C": self._clean,
            "hash": self._hash,
            "hashuid": self._hash_uid,
            "set": self._set,
            "bodypart": self._body_part,
        }

    def walk(self, ds: Dataset, path: str = "", cleaning: bool = False) -> None:
        """Apply the rules to ``ds`` in place; ``cleaning`` inside sequences being cleaned."""
        by_tag = self.rules.nested_by_tag if path else self.rules.by_tag
        creators: dict[int, str] | None = None
        for tag in list(ds.keys()):
            group = tag >> 16
            if group & 1:
                if creators is None:
                    creators = _private_creators(ds)
                rule = self._private_rule(ds, tag, creators)
            else:
                rule = by_tag.get(tag) or self._unlisted_rule(tag)
            self._apply(ds, tag, rule, path, cleaning)

    def _unlisted_rule(self, tag: int) -> Rule:
        if tag & 0xFFFF == 0:
            return _GROUP_LENGTH
        high = (tag >> 16) & 0xFF00
        if high == 0x5000:  # curve data: every element of the 50xx groups
            return self.rules.by_mask.get(0x50000000, _UNLISTED)
        if high == 0x6000:  # overlays: (60xx,3000) data and (60xx,4000) comments
            return self.rules.by_mask.get(0x60000000 | (tag & 0xFFFF), _UNLISTED)
        return _UNLISTED

    def _private_rule(self, ds: Dataset, tag: int, creators: dict[int, str]) -> Rule:
        group, element = tag >> 16, tag & 0xFFFF
        if element == 0 or group in _ILLEGAL_GROUPS:
            return _GROUP_LENGTH
        private = self.rules.private
        if private.action != "C":
            return private  # X: basic profile; K: the FIONA preset keeps private data
        if 0x10 <= element <= 0xFF:
            creator = creators.get((group << 8) | element, "")
            keep = any(_safe_creator(s, creator, group) for s in self.safe_private)
        else:
            creator = creators.get((group << 8) | (element >> 8), "")
            keep = any(_safe_element(s, creator, group, element & 0xFF) for s in self.safe_private)
        return Rule("K", private.source) if keep else Rule("X", "basic")

    def _apply(self, ds: Dataset, tag: int, rule: Rule, path: str, cleaning: bool) -> None:
        action = rule.action
        if action == "X":
            del ds[tag]
            self.audit.append(AuditEntry(path, tag, Done.REMOVED, rule.source))
            return
        vr = _vr_of(ds, tag)
        if action == "K":
            if vr == "SQ":
                self._walk_items(ds, tag, path, cleaning)
            elif rule is _UNLISTED and (
                (cleaning and vr in TEXT_VRS)
                or (self.day_offset is not None and vr in ("DA", "DT"))
            ):
                return self._clean(ds, tag, vr, rule, path)
            self.audit.append(AuditEntry(path, tag, Done.KEPT, rule.source))
            return
        self._actions[action](ds, tag, vr, rule, path)

    def _walk_items(self, ds: Dataset, tag: int, path: str, cleaning: bool) -> None:
        here = f"{path}({tag >> 16:04X},{tag & 0xFFFF:04X})"
        as_read = ds.get_item(tag)
        first_entry = len(self.audit)
        for index, item in enumerate(ds[tag].value):
            self.walk(item, f"{here}[{index}]>", cleaning)
        unchanged = all(e.done is Done.KEPT for e in self.audit[first_entry:])
        if unchanged and isinstance(as_read, RawDataElement):
            ds[tag] = as_read  # written back as read instead of re-encoded

    def _record(self, path: str, tag: int, done: Done, rule: Rule) -> None:
        self.audit.append(AuditEntry(path, tag, done, rule.source))

    def _empty(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        put_empty(ds, tag, vr)
        self._record(path, tag, Done.EMPTIED, rule)

    def _dummy(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        if vr == "UI":
            return self._replace_uid(ds, tag, vr, rule, path)
        dummy = DUMMY_BY_VR.get(vr, b"\0\0")
        if vr == "SQ":
            put_empty(ds, tag, vr)
        elif vr in ASCII_VRS and isinstance(dummy, str):
            put_ascii(ds, tag, vr, [dummy])
        else:
            ds[tag].value = dummy
        self._record(path, tag, Done.DUMMY, rule)

    def _replace_uid(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        if vr == "SQ":  # X/Z/U* resolved to U: keep the references, their UIDs replaced
            self._walk_items(ds, tag, path, False)
            return self._record(path, tag, Done.KEPT, rule)
        if vr != "UI":
            return self._dummy(ds, tag, vr, rule, path)
        originals = ascii_values(ds, tag)
        self.original_uids.update(originals)
        put_ascii(ds, tag, vr, [self.mapper.uid(v) for v in originals if v])
        self._record(path, tag, Done.REPLACED, rule)

    def _clean(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        if vr == "SQ":
            self._walk_items(ds, tag, path, True)
        elif vr in ("DA", "DT"):
            return self._shift(ds, tag, vr, rule, path)
        elif vr in TEXT_VRS:
            element = ds[tag]
            cleaned = [clean_text(str(v), self.scrub_words) for v in _values(element.value)]
            element.value = cleaned if len(cleaned) != 1 else cleaned[0]
        elif vr == "AE":
            tokens = [f"AE{self.mapper.short_token('ae', v, 8)}" for v in ascii_values(ds, tag)]
            put_ascii(ds, tag, vr, tokens)
        elif vr in BINARY_VRS:  # overlay and curve bitmaps: no way to clean them, so remove
            del ds[tag]
            return self._record(path, tag, Done.REMOVED, rule)
        elif vr == "TM":  # whole-day shifts leave times as they were
            return self._record(path, tag, Done.KEPT, rule)
        self._record(path, tag, Done.CLEANED, rule)

    def _shift(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        if self.day_offset is None:
            put_empty(ds, tag, vr)
            return self._record(path, tag, Done.EMPTIED, rule)
        originals = ascii_values(ds, tag)
        self.original_dates.update(v[:8] for v in originals if len(v) >= 8)
        put_ascii(ds, tag, vr, [shift_date(v, self.day_offset) for v in originals if v])
        self._record(path, tag, Done.SHIFTED, rule)

    def _hash(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        element = ds[tag]
        source = str(element.value or "")
        if tag == 0x00200010:  # StudyID: from the study UID and project, as the original did
            source = self.placeholders["study_uid"] + self.placeholders["project"]
        element.value = fiona_digest(source, 16)
        self._record(path, tag, Done.REPLACED, rule)

    def _hash_uid(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        originals = ascii_values(ds, tag)
        self.original_uids.update(originals)
        put_ascii(ds, tag, vr, [fiona_digest(v, 64) for v in originals if v])
        self._record(path, tag, Done.REPLACED, rule)

    def _set(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        ds[tag].value = limited(self.placeholders.get(rule.value, rule.value), vr)
        self._record(path, tag, Done.REPLACED, rule)

    def _body_part(self, ds: Dataset, tag: int, vr: str, rule: Rule, path: str) -> None:
        element = ds[tag]
        if str(element.value or "").upper() in KNOWN_BODY_PARTS:
            return self._record(path, tag, Done.KEPT, rule)
        element.value = "BODYPART"
        self._record(path, tag, Done.REPLACED, rule)


def _vr_of(ds: Dataset, tag: int) -> str:
    vr = ds.get_item(tag).VR
    if vr is None:  # implicit VR: the dictionary's
        try:
            vr = dictionary_VR(tag)
        except KeyError:
            vr = "UN"
    return str(vr)


def _values(value: object) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, MultiValue | list):
        return [str(v) for v in value]
    return [str(value)]


def _private_creators(ds: Dataset) -> dict[int, str]:
    """(group << 8 | block) → private creator string, for one dataset level."""
    creators = {}
    for tag in ds.keys():
        if tag >> 16 & 1 and 0x10 <= tag & 0xFFFF <= 0xFF:
            creators[((tag >> 16) << 8) | (tag & 0xFF)] = str(ds[tag].value or "").strip()
    return creators


def _safe_creator(entry: SafePrivate, creator: str, group: int) -> bool:
    return entry.creator == creator and entry.group in (None, group)


def _safe_element(entry: SafePrivate, creator: str, group: int, offset: int) -> bool:
    return _safe_creator(entry, creator, group) and entry.offset in (None, offset)
