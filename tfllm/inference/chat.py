"""Chat prompts for instruct models: the model's own template, rendered safely.

Instruct checkpoints (SmolLM2-Instruct, Llama-3-Instruct) were fine-tuned on
conversations in one exact format (ChatML's `<|im_start|>user … <|im_end|>`
for SmolLM2); a bare prompt gets much worse answers. Their template ships
with the checkpoint as Jinja (Hugging Face's convention); `tfllm-import`
keeps it as `tokenizer/chat_template.jinja`. It is rendered with jinja2's
sandbox, since the template is a file from the workdir, not code we wrote.
"""

from __future__ import annotations

import os

from jinja2 import TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment

from tfllm.data.tokenizer_kinds import chat_template
from tfllm.errors import ConfigError


def _raise_exception(message: str) -> None:
    """What Hugging Face templates call to reject a conversation (e.g. a bad role order)."""
    raise TemplateError(message)


def render_chat(template: str, user_message: str, system: str | None = None) -> str:
    """The prompt text for one user turn, ending where the assistant's answer starts."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user_message})
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    try:
        return env.from_string(template).render(
            messages=messages, add_generation_prompt=True, bos_token="", eos_token=""
        )
    except TemplateError as e:
        raise ConfigError(f"--chat: the model's chat template failed ({e})") from None


def chat_prompt(workdir: str, user_message: str, system: str | None = None) -> str:
    """`user_message` in the workdir's chat template; one clear line when it has none."""
    template = chat_template(os.path.join(workdir, "tokenizer"))
    if template is None:
        raise ConfigError(
            f"--chat: {workdir} has no chat template (tokenizer/chat_template.jinja); "
            "only imported instruct models carry one"
        )
    return render_chat(template, user_message, system)
