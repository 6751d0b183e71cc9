"""Pydantic models of the MET Collection API's responses, and department-name normalisation.

Field names and types follow the real payloads (see ../shared/data/met-api): text fields are strings that
are often empty (""), and a few are null in real responses (``constituents``, ``measurements``, ``tags``,
``elementDescription``); text nulls are read as "". Unknown extra fields are kept, never rejected, so a
new API field does not break a harvest.

Department names: the ``department`` string inside object records differs from the ``/departments``
display name in four places. Every name is normalised to one canonical label per department id — the
name the museum uses today, which is also the name object records and MetObjects.csv carry. The names
and ids come from the met-19 taxonomy (streams/contract/taxonomies/met-19.yaml), the one table of them.
"""
from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from streams.contract.taxonomy import load_taxonomy


def _none_to_empty(v: Any) -> Any:
    return "" if v is None else v


Text = Annotated[str, BeforeValidator(_none_to_empty)]

# The MET's departments, from the one table of them: the met-19 taxonomy (each class: its department id,
# the name object records carry first, then every other name the department goes by).
MET_TAXONOMY = "met-19"
_MET = load_taxonomy(MET_TAXONOMY)
DEPARTMENT_LABELS: dict[int, str] = {c.department_ids[0]: c.labels[0] for c in _MET.classes}
"""department id -> canonical label (the name object records and MetObjects.csv carry)."""
DISPLAY_NAMES: dict[int, str] = {c.department_ids[0]: c.display_name or c.name for c in _MET.classes}
"""department id -> the /departments displayName."""
DEPARTMENT_ALIASES: dict[str, int] = {name: c.department_ids[0] for c in _MET.classes for name in c.labels[1:]}
"""the other names a department goes by: /departments display names and the website's newer names."""
_BY_NAME: dict[str, int] = {name.casefold(): i for i, name in DEPARTMENT_LABELS.items()}
_BY_NAME.update({name.casefold(): i for name, i in DEPARTMENT_ALIASES.items()})


def department_id(name: str) -> int | None:
    """Department id for any of a department's names (case-insensitive), or None if unknown."""
    return _BY_NAME.get(name.strip().casefold())


def normalize_department(name: str) -> str:
    """Canonical label for a department name; unknown names are returned stripped, unchanged."""
    i = department_id(name)
    return DEPARTMENT_LABELS[i] if i is not None else name.strip()


class Department(BaseModel):
    model_config = ConfigDict(extra="allow")

    departmentId: int
    displayName: str

    @property
    def label(self) -> str:
        return DEPARTMENT_LABELS.get(self.departmentId, self.displayName)


class DepartmentsResponse(BaseModel):
    model_config = ConfigDict(extra="allow")

    departments: list[Department]


class ObjectIdsResponse(BaseModel):
    """``GET /objects``: ``objectIDs`` is null when nothing matches."""
    model_config = ConfigDict(extra="allow")

    total: int
    objectIDs: list[int] | None = None

    @property
    def ids(self) -> list[int]:
        return self.objectIDs or []


class Constituent(BaseModel):
    model_config = ConfigDict(extra="allow")

    constituentID: int
    role: Text = ""
    name: Text = ""
    constituentULAN_URL: Text = ""
    constituentWikidata_URL: Text = ""
    gender: Text = ""


class Measurement(BaseModel):
    model_config = ConfigDict(extra="allow")

    elementName: Text = ""
    elementDescription: str | None = None
    elementMeasurements: dict[str, float] = Field(default_factory=dict)


class Tag(BaseModel):
    model_config = ConfigDict(extra="allow")

    term: Text = ""
    AAT_URL: Text = ""
    Wikidata_URL: Text = ""


class MetObject(BaseModel):
    """``GET /objects/{id}`` — every field of the real payload."""
    model_config = ConfigDict(extra="allow")

    objectID: int
    isHighlight: bool = False
    accessionNumber: Text = ""
    accessionYear: Text = ""
    isPublicDomain: bool = False
    primaryImage: Text = ""
    primaryImageSmall: Text = ""
    additionalImages: list[str] = Field(default_factory=list)
    constituents: list[Constituent] | None = None
    department: Text = ""
    objectName: Text = ""
    title: Text = ""
    culture: Text = ""
    period: Text = ""
    dynasty: Text = ""
    reign: Text = ""
    portfolio: Text = ""
    artistRole: Text = ""
    artistPrefix: Text = ""
    artistDisplayName: Text = ""
    artistDisplayBio: Text = ""
    artistSuffix: Text = ""
    artistAlphaSort: Text = ""
    artistNationality: Text = ""
    artistBeginDate: Text = ""
    artistEndDate: Text = ""
    artistGender: Text = ""
    artistWikidata_URL: Text = ""
    artistULAN_URL: Text = ""
    objectDate: Text = ""
    objectBeginDate: int = 0
    objectEndDate: int = 0
    medium: Text = ""
    dimensions: Text = ""
    measurements: list[Measurement] | None = None
    creditLine: Text = ""
    geographyType: Text = ""
    city: Text = ""
    state: Text = ""
    county: Text = ""
    country: Text = ""
    region: Text = ""
    subregion: Text = ""
    locale: Text = ""
    locus: Text = ""
    excavation: Text = ""
    river: Text = ""
    classification: Text = ""
    rightsAndReproduction: Text = ""
    linkResource: Text = ""
    metadataDate: Text = ""
    repository: Text = ""
    objectURL: Text = ""
    tags: list[Tag] | None = None
    objectWikidata_URL: Text = ""
    isTimelineWork: bool = False
    GalleryNumber: Text = ""

    @property
    def label(self) -> str:
        return normalize_department(self.department)

    def image_url(self, original: bool = False) -> str:
        return self.primaryImage if original else (self.primaryImageSmall or self.primaryImage)

    def harvestable(self, original: bool = False) -> bool:
        """Public domain with an image: what a training corpus may keep."""
        return self.isPublicDomain and bool(self.image_url(original))
