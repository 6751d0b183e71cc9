"""JSON Schemas of the published messages, committed under docs/schemas/ (a test keeps them in sync).

Regenerate after changing `streams.worker.decisions`:

    .venv/bin/python -c "from streams.worker.schemas import write_schemas; write_schemas()"
"""
from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from streams.worker.deadletters import DeadLetter
from streams.worker.decisions import RoutingDecision

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "docs" / "schemas"
SCHEMAS: dict[str, type[BaseModel]] = {
    "routing-decision.schema.json": RoutingDecision,
    "dead-letter.schema.json": DeadLetter,
}


def render_schemas() -> dict[str, str]:
    """File name -> schema text (JSON Schema 2020-12, as pydantic generates it for serialised output)."""
    return {name: render_schema(name, model) for name, model in SCHEMAS.items()}


def render_schema(name: str, model: type[BaseModel]) -> str:
    """One schema file's text (the ledger renders docs/schemas/verdict.schema.json with it)."""
    schema = {"$schema": "https://json-schema.org/draft/2020-12/schema",
              "$id": f"urn:artroute:schema:{name.removesuffix('.schema.json')}:v1",
              **model.model_json_schema(mode="serialization")}
    return json.dumps(schema, indent=2, ensure_ascii=False) + "\n"


def write_schemas(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write every schema into `directory`; returns the paths written."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, text in render_schemas().items():
        path = directory / name
        path.write_text(text, encoding="utf-8")
        paths.append(path)
    return paths
