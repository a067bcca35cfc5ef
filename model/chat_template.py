"""The model's own chat template (``tokenizer.chat_template`` from the GGUF), rendered with Jinja2.

Renders exactly as llama-cpp-python's ``Jinja2ChatFormatter`` (the path LlamaCppEngine uses): the same
sandboxed environment options, extensions, ``tojson`` filter and template variables, so an engine
that must not load llama-cpp-python's native libraries (the ik_llama.cpp engine) produces the same
prompt string and therefore the same token counts.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment


class _IgnoreGenerationTags(jinja2.ext.Extension):
    """Pass-through for Hugging Face's ``{% generation %}`` chat-template tag."""

    tags = {"generation"}

    def parse(self, parser: Any) -> Any:
        parser.stream.skip(1)
        return parser.parse_statements(("name:endgeneration",), drop_needle=True)


def _tojson(
    x: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(f: str) -> str:
    return datetime.now().strftime(f)


def _raise_exception(message: str) -> None:
    raise ValueError(message)


class ChatTemplate:
    """A compiled chat template plus the BOS/EOS texts it may reference."""

    def __init__(
        self, template: str, *, bos_token: str, eos_token: str, add_generation_prompt: bool = True
    ) -> None:
        env = ImmutableSandboxedEnvironment(
            loader=jinja2.BaseLoader(),
            trim_blocks=True,
            lstrip_blocks=True,
            extensions=[_IgnoreGenerationTags, jinja2.ext.loopcontrols],
        )
        env.filters["tojson"] = _tojson
        self.template = template
        self.bos_token = bos_token
        self.eos_token = eos_token
        self.add_generation_prompt = add_generation_prompt
        self._compiled = env.from_string(template)

    def render(self, messages: list[dict[str, str]]) -> str:
        """The prompt string: every turn plus the assistant header."""
        return self._compiled.render(
            messages=messages,
            eos_token=self.eos_token,
            bos_token=self.bos_token,
            raise_exception=_raise_exception,
            add_generation_prompt=self.add_generation_prompt,
            functions=None,
            function_call=None,
            tools=None,
            tool_choice=None,
            strftime_now=_strftime_now,
        )
