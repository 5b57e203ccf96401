"""Chat prompts for instruct models at generation time (`tfllm-generate --chat`).

The template itself is rendered by `tfllm.data.chat_format` (shared with
instruction tuning, which must format a conversation exactly as generation
will); this module finds it in a workdir and turns its failures into one line
naming the flag.
"""

from __future__ import annotations

import os

from tfllm.data.chat_format import ChatTemplateError, render_chat
from tfllm.data.tokenizer_kinds import chat_template
from tfllm.errors import ConfigError


def chat_prompt(workdir: str, user_message: str, system: str | None = None) -> str:
    """`user_message` in the workdir's chat template; one clear line when it has none."""
    template = chat_template(os.path.join(workdir, "tokenizer"))
    if template is None:
        raise ConfigError(
            f"--chat: {workdir} has no chat template (tokenizer/chat_template.jinja); "
            "only imported instruct models carry one"
        )
    try:
        return render_chat(template, user_message, system)
    except ChatTemplateError as e:
        raise ConfigError(f"--chat: {e}") from None
