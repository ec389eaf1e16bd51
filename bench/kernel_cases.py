"""The kernel micro-benchmark cases: each fastft kernel and the op it replaces, on the same fresh inputs.

A case's `make()` returns its inputs: activations and trainable weights require grad, frozen weights do not.
`fastft(inputs)` and `reference(inputs)` return the output tensors that backward starts from.
"""
import functools
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from fastft import kernels as fk


@dataclass
class Case:
    kernel: str
    replaces: str
    shape: str
    make: Callable[[], dict]
    fastft: Callable[[dict], tuple]
    reference: Callable[[dict], tuple]
    reference_bytes: int = 0  # rough peak of the reference; above the budget it is not run


def _inputs(env, grad: dict, frozen: dict) -> dict:
    device, dtype = env
    made = {name: torch.randn(*shape, device=device, dtype=dtype) * 0.1 for name, shape in {**grad, **frozen}.items()}
    return {name: t.requires_grad_(name in grad) for name, t in made.items()}


def _case(kernel, replaces, shape, fastft, reference, env, grad, frozen=None, reference_bytes=0) -> Case:
    make = functools.partial(_inputs, env, grad, frozen or {})
    return Case(kernel, replaces, shape, make, fastft, reference, reference_bytes)


def norm_cases(rows, hidden, env):
    from transformers.models.gemma3.modeling_gemma3 import Gemma3RMSNorm
    from transformers.models.llama.modeling_llama import LlamaRMSNorm

    for offset, module_cls in ((0.0, LlamaRMSNorm), (1.0, Gemma3RMSNorm)):
        module = module_cls(hidden, eps=1e-6).to(env[0])
        yield _case(f"rms_norm(offset={offset:g})", module_cls.__name__, f"{rows}x{hidden}",
                    lambda t, o=offset: (fk.rms_norm(t["x"], t["w"], 1e-6, offset=o),),
                    lambda t, m=module: (torch.func.functional_call(m, {"weight": t["w"]}, (t["x"],)),),
                    env, grad={"x": (rows, hidden), "w": (hidden,)})


def activation_cases(rows, inter, env):
    gated = {"g": (rows, inter), "u": (rows, inter)}
    yield _case("swiglu", "F.silu(gate) * up", f"{rows}x{inter}", lambda t: (fk.swiglu(t["g"], t["u"]),),
                lambda t: (F.silu(t["g"]) * t["u"],), env, grad=gated)
    yield _case("geglu", "F.gelu(gate, 'tanh') * up", f"{rows}x{inter}", lambda t: (fk.geglu(t["g"], t["u"]),),
                lambda t: (F.gelu(t["g"], approximate="tanh") * t["u"],), env, grad=gated)


def rope_cases(seq, heads, kv_heads, head_dim, env):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    yield _case("apply_rope", "transformers apply_rotary_pos_emb", f"q 1x{heads}x{seq}x{head_dim}, k {kv_heads} heads",
                lambda t: fk.apply_rope(t["q"], t["k"], t["cos"], t["sin"]),
                lambda t: apply_rotary_pos_emb(t["q"], t["k"], t["cos"], t["sin"]), env,
                grad={"q": (1, heads, seq, head_dim), "k": (1, kv_heads, seq, head_dim)},
                frozen={"cos": (1, seq, head_dim), "sin": (1, seq, head_dim)})


def _peft_lora(x, w, a, b, scaling=2.0):
    return F.linear(x, w) + F.linear(F.linear(x, a), b) * scaling  # what a PEFT lora.Linear computes (no dropout)


def _lora_shapes(name, n_in, n_out, r) -> tuple[dict, dict]:
    return {f"{name}a": (r, n_in), f"{name}b": (n_out, r)}, {f"{name}w": (n_out, n_in)}


def lora_cases(rows, hidden, inter, r, env):
    grad, frozen = _lora_shapes("", hidden, inter, r)
    yield _case("lora_linear", "PEFT lora.Linear", f"{rows}x{hidden} -> {inter}, r={r}",
                lambda t: (fk.lora_linear(t["x"], t["w"], t["a"], t["b"], 2.0),),
                lambda t: (_peft_lora(t["x"], t["w"], t["a"], t["b"]),), env,
                grad={"x": (rows, hidden), **grad}, frozen=frozen)
    grad, frozen = {"x": (rows, hidden)}, {}
    for name, n_in, n_out in (("gate_", hidden, inter), ("up_", hidden, inter), ("down_", inter, hidden)):
        g, f = _lora_shapes(name, n_in, n_out, r)
        grad, frozen = {**grad, **g}, {**frozen, **f}

    def weights(t, name):
        return t[f"{name}_w"], t[f"{name}_a"], t[f"{name}_b"]

    def reference(t):
        hidden_act = F.silu(_peft_lora(t["x"], *weights(t, "gate"))) * _peft_lora(t["x"], *weights(t, "up"))
        return (_peft_lora(hidden_act, *weights(t, "down")),)

    yield _case("lora_mlp (swiglu)", "PEFT LoRA MLP: down(silu(gate(x)) * up(x))", f"{rows}x{hidden}, I={inter}, r={r}",
                lambda t: (fk.lora_mlp(t["x"], *((*weights(t, n), 2.0) for n in ("gate", "up", "down"))),),
                reference, env, grad=grad, frozen=frozen)


def ce_cases(rows, vocab, env):
    labels = torch.randint(0, vocab, (rows,), device=env[0])
    yield _case("cross_entropy", "F.cross_entropy(logits.float())", f"{rows}x{vocab}",
                lambda t: (fk.cross_entropy(t["z"], labels),), lambda t: (F.cross_entropy(t["z"].float(), labels),),
                env, grad={"z": (rows, vocab)}, reference_bytes=3 * rows * vocab * 4)


def lce_cases(rows_list, hidden, vocab, env):
    """Every row labelled (the worst case: nothing to drop); the head frozen, as in LoRA training."""
    for n in rows_list:
        labels = torch.randint(0, vocab, (n,), device=env[0])
        yield _case("linear_cross_entropy", "F.cross_entropy(h @ W.T) (frozen head)", f"N={n}, H={hidden}, V={vocab}",
                    lambda t, y=labels: (fk.linear_cross_entropy(t["h"], t["w"], y),),
                    lambda t, y=labels: (F.cross_entropy((t["h"] @ t["w"].t()).float(), y),),
                    env, grad={"h": (n, hidden)}, frozen={"w": (vocab, hidden)}, reference_bytes=3 * n * vocab * 4)
