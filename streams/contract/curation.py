"""Curation: what the ledger publishes about curators' verdicts, and what trainer reads from the ledger.

Both sides import this and neither restates it: the ledger (streams/ledger) publishes `Verdict` messages
to the verdicts topic (keyed by object key; JSON Schema docs/schemas/verdict.schema.json) and serves
`CuratedPage`s and object images over its HTTP API; `python -m trainer corpus verdicts` reads them.

A verdict answers one decision (decision id + model version, what the curator was shown) about one object
(bucket, key, etag). Its kind is

* ``confirm``      the model's department is right (``department`` repeats it);
* ``correct``      another department of the model's taxonomy is (``department`` names it);
* ``not_routable`` the photo is no artwork or unusable (``department`` is null);
* ``retract``      undoes the verdict named by ``retracts`` (the object falls back to the previous one).

The latest verdict per object wins; the ledger keeps every one. Verdict ids are chosen once, when the
verdict is recorded, and a verdict's message is written once into the ledger's outbox: a republished
verdict has the same id and the same bytes.
"""
from __future__ import annotations

import uuid
from typing import Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

VerdictKind = Literal["confirm", "correct", "not_routable", "retract"]
VERDICT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:artroute:verdict")
NOT_ROUTABLE_LABEL = "Not routable"
"""The class name `corpus verdicts --not-routable-class` gives "not routable" verdicts."""

# The ledger HTTP API as trainer uses it (the full API: docs/ledger.md).
API_PREFIX = "/api/v1"
CURATED_PATH = f"{API_PREFIX}/curated"
IMAGE_PATH = f"{API_PREFIX}/image"
TOKEN_ENV = "ARTROUTE_LEDGER_API_TOKEN"
"""Environment variable holding the API's bearer token (sent as `Authorization: Bearer ...`)."""


def new_verdict_id() -> str:
    return str(uuid.uuid4())


class ModelRef(BaseModel):
    name: str
    version: str


class Verdict(BaseModel):
    """A curator's verdict on one object, as published on the verdicts topic (keyed by `key`)."""
    model_config = ConfigDict(frozen=True, title="Verdict")

    schema_version: Literal[1] = 1
    verdict_id: str = Field(description="Chosen when the verdict is recorded; a republished verdict keeps it.")
    bucket: str
    key: str
    etag: str = Field(description="The object content the curator saw.")
    decision_id: str = Field(description="The decision the verdict answers.")
    model: ModelRef = Field(description="The model (and version) that made that decision.")
    predicted_department: str = Field(description="That decision's department (the model's top-1).")
    kind: VerdictKind
    department: str | None = Field(description="The curator's department (confirm: the model's); null for "
                                               "not_routable and retract.")
    department_id: int | None = Field(None, description="Its department id, when the taxonomy has one.")
    retracts: str | None = Field(None, description="kind retract: the verdict id it undoes.")
    curator: str = Field(min_length=1)
    recorded_at: AwareDatetime
    note: str = ""


class CuratedItem(BaseModel):
    """One object's current verdict (what `corpus verdicts` turns into a manifest row)."""
    bucket: str
    key: str
    etag: str
    version_id: str | None = None
    kind: Literal["confirm", "correct", "not_routable"]
    department: str | None
    department_id: int | None = None
    verdict_id: str
    decision_id: str
    model: ModelRef
    curator: str
    recorded_at: AwareDatetime


class CuratedPage(BaseModel):
    """GET {CURATED_PATH}?limit=N&cursor=C: objects by id; `next_cursor` is null on the last page."""
    items: list[CuratedItem]
    next_cursor: str | None = None
