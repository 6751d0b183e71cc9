"""Object records for the fake API: real ones from ../shared/data/met-api, or generated deterministically.

Real sources, mapped into the ``GET /objects/{id}`` payload shape (names and types of the real API):
``objects/*.json`` (real payloads, as is), ``records_8870.jsonl`` (MetObjects.csv row + API-only fields),
``metobjects_rows_2000.csv`` (MetObjects.csv rows) and ``ten_per_department_190.json`` (sparse records;
the only real ones for the Costume Institute and the Libraries). Image URLs are placeholders that the fake
rewrites to point at itself; as in the real API they are "" for objects that are not public domain.
"""
from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

from trainer.metapi.models import DEPARTMENT_LABELS, MetObject, department_id

# MetObjects.csv column -> API payload field
EXCEL_TO_API = {
    "Object Number": "accessionNumber", "Is Highlight": "isHighlight", "Is Timeline Work": "isTimelineWork",
    "Is Public Domain": "isPublicDomain", "Object ID": "objectID", "Gallery Number": "GalleryNumber",
    "Department": "department", "AccessionYear": "accessionYear", "Object Name": "objectName",
    "Title": "title", "Culture": "culture", "Period": "period", "Dynasty": "dynasty", "Reign": "reign",
    "Portfolio": "portfolio", "Artist Role": "artistRole", "Artist Prefix": "artistPrefix",
    "Artist Display Name": "artistDisplayName", "Artist Display Bio": "artistDisplayBio",
    "Artist Suffix": "artistSuffix", "Artist Alpha Sort": "artistAlphaSort",
    "Artist Nationality": "artistNationality", "Artist Begin Date": "artistBeginDate",
    "Artist End Date": "artistEndDate", "Artist Gender": "artistGender", "Artist ULAN URL": "artistULAN_URL",
    "Artist Wikidata URL": "artistWikidata_URL", "Object Date": "objectDate",
    "Object Begin Date": "objectBeginDate", "Object End Date": "objectEndDate", "Medium": "medium",
    "Dimensions": "dimensions", "Credit Line": "creditLine", "Geography Type": "geographyType",
    "City": "city", "State": "state", "County": "county", "Country": "country", "Region": "region",
    "Subregion": "subregion", "Locale": "locale", "Locus": "locus", "Excavation": "excavation",
    "River": "river", "Classification": "classification", "Rights and Reproduction": "rightsAndReproduction",
    "Link Resource": "linkResource", "Object Wikidata URL": "objectWikidata_URL",
    "Metadata Date": "metadataDate", "Repository": "repository",
}
BOOL_FIELDS = {"isHighlight", "isTimelineWork", "isPublicDomain"}
INT_FIELDS = {"objectID", "objectBeginDate", "objectEndDate"}
IMAGE_PLACEHOLDER = "fake://image"          # rewritten by the fake server to its own URL


def _text(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v).strip()


def _value(field: str, v: Any) -> Any:
    if field in BOOL_FIELDS:
        return v if isinstance(v, bool) else str(v).strip().lower() == "true"
    if field in INT_FIELDS:
        return int(float(v)) if v not in (None, "") else 0
    return _text(v)


def blank_payload(object_id: int) -> dict[str, Any]:
    """Every field of a real payload at its empty value (what the API sends for missing data)."""
    payload = {name: field.get_default(call_default_factory=True)
               for name, field in MetObject.model_fields.items()}
    payload.update(objectID=object_id, additionalImages=[], constituents=None, measurements=[], tags=None)
    return payload


def excel_to_payload(excel: dict[str, Any], api: dict[str, Any] | None = None) -> dict[str, Any]:
    """A MetObjects.csv row (JSON or CSV strings) plus the API-only fields -> a ``/objects/{id}`` payload."""
    payload = blank_payload(int(float(excel["Object ID"])))
    for column, field in EXCEL_TO_API.items():
        if column in excel:
            payload[field] = _value(field, excel[column])
    api = api or {}
    payload["objectURL"] = f"https://www.metmuseum.org/art/collection/search/{payload['objectID']}"
    for key in ("constituents", "measurements", "tags"):
        if key in api:
            payload[key] = api[key]
    has_image = bool(api.get("primaryImage", IMAGE_PLACEHOLDER))
    _set_images(payload, has_image, len(api.get("additionalImages") or []))
    return payload


def sparse_to_payload(rec: dict[str, Any]) -> dict[str, Any]:
    """A ten_per_department_190.json record (snake_case, few fields) -> a payload."""
    payload = blank_payload(int(rec["met_object_id"]))
    for src, dst in (("department", "department"), ("title", "title"), ("accession_number", "accessionNumber"),
                     ("link_resource", "linkResource"), ("dynasty", "dynasty"), ("reign", "reign"),
                     ("city", "city"), ("country", "country"), ("region", "region"),
                     ("subregion", "subregion"), ("locale", "locale"), ("loci", "locus"),
                     ("excavation", "excavation"), ("river", "river")):
        payload[dst] = _text(rec.get(src))
    payload["isPublicDomain"] = True
    _set_images(payload, True, 0)
    return payload


def _set_images(payload: dict[str, Any], has_image: bool, n_additional: int) -> None:
    show = has_image and payload["isPublicDomain"]
    payload["primaryImage"] = IMAGE_PLACEHOLDER if show else ""
    payload["primaryImageSmall"] = IMAGE_PLACEHOLDER if show else ""
    payload["additionalImages"] = [IMAGE_PLACEHOLDER] * n_additional if show else []


def load_real_records(met_api_dir: Path) -> dict[int, dict[str, Any]]:
    """All real records under a met-api directory, keyed by object id (richest source wins)."""
    records: dict[int, dict[str, Any]] = {}
    sparse = met_api_dir / "ten_per_department_190.json"
    if sparse.is_file():
        for rec in json.loads(sparse.read_text(encoding="utf-8")):
            records[int(rec["met_object_id"])] = sparse_to_payload(rec)
    rows = met_api_dir / "metobjects_rows_2000.csv"
    if rows.is_file():
        with rows.open(encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                p = excel_to_payload(row)
                records[p["objectID"]] = p
    jsonl = met_api_dir / "records_8870.jsonl"
    if jsonl.is_file():
        with jsonl.open(encoding="utf-8") as f:
            for line in f:
                rec = json.loads(line)
                p = excel_to_payload(rec["excel_metadata"], rec["api_metadata"])
                records[p["objectID"]] = p
    for path in sorted((met_api_dir / "objects").glob("*.json")):
        p = json.loads(path.read_text(encoding="utf-8"))
        _set_images(p, bool(p.get("primaryImage")), len(p.get("additionalImages") or []))
        records[p["objectID"]] = p
    return records


# --- generated records -----------------------------------------------------------------------------
# names objects carry (the four /departments mismatches included, as in real records)
_NOUNS = ["Bowl", "Vase", "Portrait", "Figure", "Plate", "Panel", "Helmet", "Scroll", "Print", "Cup",
          "Textile fragment", "Box", "Lute", "Photograph", "Dress", "Book", "Head", "Relief", "Mask", "Jar"]
_MEDIA = ["Bronze", "Oil on canvas", "Terracotta", "Silk", "Ink on paper", "Gelatin silver print",
          "Wood", "Earthenware", "Silver", "Marble", "Steel", "Ivory"]
GENERATED_ID_BASE = 90_000_000


def generate_records(per_department: int, seed: int = 0,
                     departments: list[int] | None = None) -> dict[int, dict[str, Any]]:
    """Deterministic synthetic records: ``per_department`` per department, about 15 % not public domain,
    with the real payload's empty strings and nulls."""
    records = {}
    for dept in departments or list(DEPARTMENT_LABELS):
        rng = random.Random(f"{seed}:{dept}")
        for k in range(per_department):
            oid = GENERATED_ID_BASE + dept * 100_000 + k
            p = blank_payload(oid)
            noun = rng.choice(_NOUNS)
            begin = rng.randint(-2000, 1990)
            p.update(department=DEPARTMENT_LABELS[dept], objectName=noun, title=f"{noun} no. {k}",
                     medium=rng.choice(_MEDIA), objectBeginDate=begin, objectEndDate=begin + rng.randint(0, 50),
                     objectDate=f"ca. {begin}" if begin > 0 else f"ca. {-begin} BCE",
                     accessionNumber=f"{1900 + dept}.{k}", accessionYear=str(1900 + rng.randint(0, 120)),
                     isPublicDomain=rng.random() > 0.15, creditLine="Generated for tests",
                     repository="Metropolitan Museum of Art, New York, NY",
                     objectURL=f"https://www.metmuseum.org/art/collection/search/{oid}",
                     constituents=None if rng.random() < 0.5 else [
                         {"constituentID": oid, "role": "Artist", "name": f"Maker {k}", "constituentULAN_URL": "",
                          "constituentWikidata_URL": "", "gender": ""}],
                     measurements=[{"elementName": "Overall", "elementDescription": None,
                                    "elementMeasurements": {"Height": round(rng.uniform(5, 200), 1)}}],
                     tags=None)
            _set_images(p, True, rng.randint(0, 2))
            records[oid] = p
    return records


def build_records(met_api_dir: Path | None = None, min_per_department: int = 40,
                  seed: int = 0) -> dict[int, dict[str, Any]]:
    """Real records when ``met_api_dir`` exists, topped up with generated ones so that every department
    has at least ``min_per_department`` records."""
    records = load_real_records(met_api_dir) if met_api_dir and met_api_dir.is_dir() else {}
    have = {d: 0 for d in DEPARTMENT_LABELS}
    for p in records.values():
        d = department_id(p["department"])
        if d is not None:
            have[d] += 1
    for dept, n in have.items():
        if n < min_per_department:
            gen = generate_records(min_per_department, seed, [dept])
            records.update(dict(list(gen.items())[: min_per_department - n]))
    return records
