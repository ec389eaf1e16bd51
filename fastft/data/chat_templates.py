"""fastft's own chat templates, used when a tokenizer ships none (the packaged Gemma GGUF, the offline Llama-3
and Qwen tokenizers). Each renders the same turn layout as the model family's official template.
"""

# Gemma has no system role: a system message is prepended to the first user turn.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{% set ns = namespace(system='') %}"
    "{% for message in messages %}"
    "{% if message['role'] == 'system' %}{% set ns.system = message['content'] + '\n\n' %}"
    "{% else %}"
    "{% set role = 'model' if message['role'] == 'assistant' else message['role'] %}"
    "<start_of_turn>{{ role }}\n{{ ns.system if role == 'user' else '' }}{{ message['content'] }}<end_of_turn>\n"
    "{% if role == 'user' %}{% set ns.system = '' %}{% endif %}"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}"
)

LLAMA3_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}"
    "<|start_header_id|>{{ message['role'] }}<|end_header_id|>\n\n{{ message['content'] }}<|eot_id|>"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}"
)

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Marker token of each family -> (template, end-of-turn token).
FAMILIES = {
    "<start_of_turn>": (GEMMA_TEMPLATE, "<end_of_turn>"),
    "<|start_header_id|>": (LLAMA3_TEMPLATE, "<|eot_id|>"),
    "<|im_start|>": (CHATML_TEMPLATE, "<|im_end|>"),
}
END_OF_TURN_TOKENS = tuple(eot for _, eot in FAMILIES.values())


def template_for(tokenizer) -> str:
    """The tokenizer's own chat template, else fastft's template for the family its vocabulary belongs to."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.chat_template
    vocab = tokenizer.get_vocab()
    for marker, (template, _) in FAMILIES.items():
        if marker in vocab:
            return template
    return CHATML_TEMPLATE
