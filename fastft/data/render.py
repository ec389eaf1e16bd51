"""Turn an Example into prompt text (head, body, tail) and answer text, for training and generation alike.

The prompt is split around the body so that an over-long prompt loses the oldest body tokens and keeps
the instruction and the template's turn markers. Generation calls the same code, so train and inference
prompts cannot drift apart.
"""
from ..errors import FastftError
from .chat_templates import END_OF_TURN_TOKENS, template_for
from .formats import Example

_BODY = "\ue000BODY\ue000"  # private-use sentinel: never in real text
_PROBE = "\ue000ANSWER\ue000"


class Renderer:
    def __init__(self, tokenizer, format_type: str, system_prompt: str | None = None):
        self.tokenizer = tokenizer
        self.format_type = format_type
        self.system_prompt = system_prompt
        if format_type == "chat":
            self.template = template_for(tokenizer)
            self.end_token = self._chat_end_token()
        else:
            self.template = None
            self.end_token = tokenizer.eos_token
        if not self.end_token:
            raise FastftError(
                "the tokenizer has no end-of-sequence token, so the model could never learn to stop",
                hint="use a tokenizer with an eos_token, or format_type: chat with a chat template",
            )

    def prompt_parts(self, example: Example) -> tuple[str, str, str]:
        """(head, body, tail): the body is what left-truncation may shorten."""
        if self.format_type == "chat":
            text = self._render_chat(self._user_content(example), add_generation_prompt=True)
        else:
            text = self._render_instruction(example)
        head, _, tail = text.partition(_BODY)
        return head, example.body, tail

    def answer_text(self, example: Example) -> str:
        """The trained text: the answer and the end-of-turn token, nothing after it."""
        return example.answer + self.end_token

    def _user_content(self, example: Example) -> str:
        return f"{example.instruction}\n\n{_BODY}" if example.instruction else _BODY

    def _messages(self, user_content: str) -> list[dict]:
        system = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return system + [{"role": "user", "content": user_content}]

    def _render_chat(self, user_content: str, add_generation_prompt: bool, answer: str | None = None) -> str:
        messages = self._messages(user_content)
        if answer is not None:
            messages.append({"role": "assistant", "content": answer})
        return self.tokenizer.apply_chat_template(
            messages, chat_template=self.template, tokenize=False, add_generation_prompt=add_generation_prompt
        )

    def _chat_end_token(self) -> str:
        """The token the template closes an assistant turn with, found by rendering a probe answer."""
        rendered = self._render_chat("x", add_generation_prompt=False, answer=_PROBE)
        after = rendered.split(_PROBE, 1)[1]
        for token in (*END_OF_TURN_TOKENS, self.tokenizer.eos_token):
            if token and after.startswith(token):
                return token
        raise FastftError(
            f"the chat template ends an assistant turn with {after[:30]!r}, not a known end-of-turn token",
            hint="set format_type: instruction, or give the tokenizer a chat template that ends turns with a special token",
        )

    def _render_instruction(self, example: Example) -> str:
        bos = self.tokenizer.bos_token or ""
        system = f"{self.system_prompt}\n\n" if self.system_prompt else ""
        parts = [f"{bos}{system}### Instruction:\n{example.instruction}\n\n"]
        if example.body:
            parts.append(f"### Input:\n{_BODY}\n\n")
        parts.append("### Response:\n")
        return "".join(parts)
