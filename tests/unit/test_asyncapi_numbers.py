"""Every integer the websocket API sends or takes fits a JSON reader's double exactly (at most
2^53), except the nanosecond timestamps, which docs/asyncapi.yaml says exceed it; ids are
strings. A JavaScript client that rounds a number silently computes something else."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

DOCUMENT = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.yaml"
EXACT_MAX = 2**53
TIMESTAMPS = "#/components/schemas/Nanoseconds"


def integer_schemas(node: Any, path: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every schema below `node` that admits an integer, with its path."""
    if isinstance(node, dict):
        kinds = node.get("type")
        if kinds == "integer" or (isinstance(kinds, list) and "integer" in kinds):
            yield path, node
        for key, value in node.items():
            yield from integer_schemas(value, f"{path}/{key}")
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from integer_schemas(value, f"{path}/{index}")


def test_no_integer_field_can_exceed_2_to_the_53_but_the_documented_timestamps() -> None:
    schemas = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))["components"]["schemas"]
    unbounded = [path for name, schema in schemas.items() if name != "Nanoseconds"
                 for path, integer in integer_schemas(schema, name)
                 if integer.get("maximum", EXACT_MAX + 1) > EXACT_MAX]
    assert unbounded == []
    assert "Nanoseconds" in DOCUMENT.read_text(encoding="utf-8").split("## Numbers")[1]


def test_ids_are_strings() -> None:
    schemas = yaml.safe_load(DOCUMENT.read_text(encoding="utf-8"))["components"]["schemas"]
    ids = [(name, field, spec) for name, schema in schemas.items()
           for field, spec in schema.get("properties", {}).items()
           if isinstance(spec, dict) and field.endswith("_id")
           and field not in ("req_id", "eip712_chain_id")]
    assert ids, "the document names ids"
    assert [(name, field) for name, field, spec in ids
            if spec.get("type") == "integer"] == []
