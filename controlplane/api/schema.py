"""drf-spectacular extensions: the bearer API token scheme, and the error answers every
operation documents (a postprocessing hook)."""

from drf_spectacular.extensions import OpenApiAuthenticationExtension


class ApiTokenScheme(OpenApiAuthenticationExtension):
    target_class = "controlplane.authentication.ApiTokenAuthentication"
    name = "apiToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "cpt_<prefix>_<secret>",
            "description": "A project-scoped API token; acts for its creator within one project.",
        }


# --- error responses ----------------------------------------------------------------------

ERROR_COMPONENTS = {
    "Error": {
        "type": "object",
        "description": "A refused request: what went wrong, for people.",
        "properties": {"detail": {"type": "string"}},
        "required": ["detail"],
    },
    "ValidationErrors": {
        "type": "object",
        "description": "Bad input: messages keyed by field path (`config.grants.0.rules`), "
        "`non_field_errors` for the request as a whole, or `detail` for an unreadable body.",
        "additionalProperties": {},
    },
}
_ERROR_RESPONSES = {
    "400": ("ValidationErrors", "Bad input; nothing was changed."),
    "401": ("Error", "No credentials, or an invalid, expired or revoked token."),
    "403": ("Error", "Your role in the project, or the token's scopes, do not allow this."),
    "404": ("Error", "No such object in a project you belong to."),
    "409": ("Error", "A concurrent change (e.g. a name just taken); retry."),
}
_WRITE_METHODS = {"post", "put", "patch", "delete"}


def add_error_responses(result, generator, request, public):
    """drf-spectacular postprocessing hook: document the error answers every operation can
    give (400 keyed by field, 401, 403, 404; 409 for writes), so clients and the fuzz test
    (tests/test_api_fuzz.py) can check them against the schema like any success."""
    schemas = result.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in ERROR_COMPONENTS.items():
        schemas.setdefault(name, schema)
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            if not isinstance(operation, dict) or "responses" not in operation:
                continue
            for code, (component, description) in _ERROR_RESPONSES.items():
                if code == "409" and method not in _WRITE_METHODS:
                    continue
                operation["responses"].setdefault(
                    code,
                    {
                        "content": {
                            "application/json": {
                                "schema": {"$ref": f"#/components/schemas/{component}"}
                            }
                        },
                        "description": description,
                    },
                )
    return result
