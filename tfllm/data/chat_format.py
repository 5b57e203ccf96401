"""Chat templates for instruct models: the model's own template, rendered safely.

Instruct checkpoints (SmolLM2-Instruct, Llama-3-Instruct) were fine-tuned on
conversations in one exact format (ChatML's `<|im_start|>user … <|im_end|>`
for SmolLM2); a bare prompt gets much worse answers, and fine-tuning on
another format teaches the model a second dialect. Their template ships with
the checkpoint as Jinja (Hugging Face's convention); `tfllm-import` keeps it
as `tokenizer/chat_template.jinja`. It is rendered with jinja2's sandbox,
since the template is a file from the workdir, not code we wrote.

Generation renders a prompt (`render_chat`); instruction tuning renders the
prompt and the whole exchange (`render_exchange`) and learns only what the
second adds (`tfllm.data.instruction_data`).
"""

from __future__ import annotations

import functools

from jinja2 import Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment


class ChatTemplateError(ValueError):
    """The template failed on a conversation (callers name the flag or file)."""


def _raise_exception(message: str) -> None:
    """What Hugging Face templates call to reject a conversation (e.g. a bad role order)."""
    raise TemplateError(message)


def render_messages(template: str, messages: list[dict], add_generation_prompt: bool) -> str:
    """`messages` ({"role", "content"} dicts) in the template, as transformers'
    `apply_chat_template(tokenize=False)` renders them."""
    try:
        return _compiled(template).render(
            messages=messages,
            add_generation_prompt=add_generation_prompt,
            bos_token="",
            eos_token="",
        )
    except TemplateError as e:
        raise ChatTemplateError(f"the model's chat template failed ({e})") from None


@functools.lru_cache(maxsize=8)
def _compiled(template: str) -> Template:
    """The template compiled once (instruction tuning renders it twice per pair)."""
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = _raise_exception
    return env.from_string(template)


def render_chat(template: str, user_message: str, system: str | None = None) -> str:
    """The prompt text for one user turn, ending where the assistant's answer starts."""
    messages = [{"role": "system", "content": system}] if system else []
    messages.append({"role": "user", "content": user_message})
    return render_messages(template, messages, add_generation_prompt=True)


def render_exchange(
    template: str, user_message: str, answer: str, system: str | None = None
) -> tuple[str, str]:
    """(prompt, whole exchange): the exchange is the prompt followed by the answer and
    whatever the template closes a turn with (`<|im_end|>`). A template whose
    exchange does not start with its prompt cannot say where the answer starts:
    ChatTemplateError."""
    prompt = render_chat(template, user_message, system)
    messages = [{"role": "system", "content": system}] if system else []
    messages += [
        {"role": "user", "content": user_message},
        {"role": "assistant", "content": answer},
    ]
    exchange = render_messages(template, messages, add_generation_prompt=False)
    if not exchange.startswith(prompt):
        raise ChatTemplateError(
            "the model's chat template renders an answered turn that does not start with "
            "its prompt, so the answer's tokens cannot be told apart"
        )
    return prompt, exchange
