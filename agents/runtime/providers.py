"""The provider model of an agent version's endpoint: OpenAI, Anthropic, an OpenAI-compatible
server (base URL) or the scripted model; credentials from ``controlplane.secrets``."""

from __future__ import annotations

from pydantic_ai.models import Model

from agents.config import parse_script
from agents.models import ModelEndpoint, ProviderKind
from agents.runtime.scripted import scripted_model
from controlplane.secrets import SecretUnavailableError, resolve_secret


class EndpointUnavailable(Exception):
    """The endpoint cannot be called (no credential, unknown kind); the message says why."""


def endpoint_api_key(endpoint: ModelEndpoint, *, required: bool) -> str | None:
    """The endpoint's API key from its environment variable or its encrypted copy. Raises
    ``EndpointUnavailable`` when ``required`` and there is none."""
    if not endpoint.has_credential:
        if required:
            raise EndpointUnavailable(f"model endpoint {endpoint.name} has no credential")
        return None
    try:
        return resolve_secret(
            env_var=endpoint.credential_env_var, encrypted=endpoint.credential_encrypted
        )
    except SecretUnavailableError as exc:
        raise EndpointUnavailable(f"model endpoint {endpoint.name}: {exc}") from exc


def provider_model(*, endpoint: ModelEndpoint, model_name: str) -> Model:
    """The pydantic-ai model for ``model_name`` on ``endpoint`` (not governed: wrap it in
    ``agents.runtime.governed_model.GovernedModel``). Raises ``EndpointUnavailable`` and,
    for a scripted endpoint with an invalid script, ``ValidationError``."""
    if endpoint.kind == ProviderKind.SCRIPTED:
        return scripted_model(script=parse_script(endpoint.script), model_name=model_name)
    if endpoint.kind in (ProviderKind.OPENAI, ProviderKind.OPENAI_COMPATIBLE):
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider

        compatible = endpoint.kind == ProviderKind.OPENAI_COMPATIBLE
        # Local OpenAI-compatible servers often need no key; the client insists on one.
        key = endpoint_api_key(endpoint, required=not compatible) or "no-key"
        provider = OpenAIProvider(base_url=endpoint.base_url or None, api_key=key)
        model_class = _compatible_chat_model() if compatible else OpenAIChatModel
        return model_class(model_name, provider=provider)
    if endpoint.kind == ProviderKind.ANTHROPIC:
        from pydantic_ai.models.anthropic import AnthropicModel
        from pydantic_ai.providers.anthropic import AnthropicProvider

        key = endpoint_api_key(endpoint, required=True)
        provider = AnthropicProvider(api_key=key, base_url=endpoint.base_url or None)
        return AnthropicModel(model_name, provider=provider)
    raise EndpointUnavailable(f"model endpoint {endpoint.name} has unknown kind {endpoint.kind}")


def _compatible_chat_model():
    """``OpenAIChatModel`` sending ``content: ""`` instead of ``null`` in an assistant
    message that holds only tool calls. OpenAI accepts null there; llama.cpp's server
    (llama-cpp-python) and some other OpenAI-compatible servers reject the request, so an
    agent whose turn has a tool call could never send the tool's result back.
    ``_map_model_response`` is pydantic-ai's documented hook for this."""
    from pydantic_ai.models.openai import OpenAIChatModel

    class CompatibleChatModel(OpenAIChatModel):
        def _map_model_response(self, message):
            mapped = super()._map_model_response(message)
            is_assistant = mapped is not None and mapped.get("role") == "assistant"
            if is_assistant and mapped.get("content") is None:
                mapped["content"] = ""
            return mapped

    return CompatibleChatModel
