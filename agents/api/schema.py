"""drf-spectacular extension: pydantic documents (``AgentVersionConfig``) in the OpenAPI 3.0 schema."""

from __future__ import annotations

from typing import Any, get_args

from drf_spectacular.drainage import set_override
from drf_spectacular.extensions import OpenApiSerializerExtension
from drf_spectacular.plumbing import ResolvedComponent

from agents.config import Effect

# Literal choice sets used by several fields, published as one enum component each.
NAMED_ENUMS: dict[tuple[Any, ...], str] = {get_args(Effect): "GrantEffectEnum"}
_NULL = {"type": "null"}


def openapi_30(node: Any) -> Any:
    """Rewrite pydantic's JSON Schema (2020-12) in OpenAPI 3.0 terms: ``anyOf [X, null]``
    becomes X with ``nullable: true``, ``const`` becomes a one-value ``enum``."""
    if isinstance(node, list):
        return [openapi_30(item) for item in node]
    if not isinstance(node, dict):
        return node
    node = {key: openapi_30(value) for key, value in node.items()}
    if "const" in node:
        node["enum"] = [node.pop("const")]
    for key in ("anyOf", "oneOf"):
        options = node.get(key)
        if not options or _NULL not in options:
            continue
        rest = [option for option in options if option != _NULL]
        del node[key]
        if len(rest) > 1:
            node[key] = rest
        elif "$ref" in rest[0]:
            node["allOf"] = rest
        else:
            node = {**rest[0], **node}
        node["nullable"] = True
    return node


class PydanticSchema(OpenApiSerializerExtension):
    """A pydantic model used as a request or response field, e.g. ``AgentVersionConfig``.

    Replaces drf-spectacular's contrib extension (``priority``), whose JSON Schema 2020-12
    output (``{"type": "null"}``) fails OpenAPI 3.0 validation. Nested models become
    components; choice sets in ``NAMED_ENUMS`` become shared enum components, so fields
    such as ``effect`` and ``rules[].then`` name the same enum.
    """

    target_class = "pydantic.BaseModel"
    match_subclasses = True
    priority = 1

    def get_name(self, auto_schema, direction):
        # Nested models are registered by their own names; one name serves both directions.
        set_override(self.target, "suppress_collision_warning", True)
        return self.target.__name__

    def map_serializer(self, auto_schema, direction):
        from pydantic.json_schema import model_json_schema

        schema = model_json_schema(self.target, ref_template="#/components/schemas/{model}")
        schema = openapi_30(schema)
        components = {
            name: self._named_enums(sub, auto_schema)
            for name, sub in schema.pop("$defs", {}).items()
        }
        for name, sub_schema in components.items():
            auto_schema.registry.register_on_missing(
                ResolvedComponent(
                    name=name, type=ResolvedComponent.SCHEMA, object=name, schema=sub_schema
                )
            )
        return self._named_enums(schema, auto_schema)

    def _named_enums(self, schema: dict[str, Any], auto_schema) -> dict[str, Any]:
        for prop_name, prop in schema.get("properties", {}).items():
            target = prop.get("items", prop) if prop.get("type") == "array" else prop
            name = NAMED_ENUMS.get(tuple(target.get("enum", ())))
            if name is None:
                continue
            auto_schema.registry.register_on_missing(
                ResolvedComponent(
                    name=name,
                    type=ResolvedComponent.SCHEMA,
                    object=name,
                    schema={"type": "string", "enum": target["enum"]},
                )
            )
            rest = {k: v for k, v in target.items() if k not in ("enum", "type")}
            replaced = {**rest, "allOf": [{"$ref": f"#/components/schemas/{name}"}]}
            if target is prop:
                schema["properties"][prop_name] = replaced
            else:
                prop["items"] = replaced
        return schema
