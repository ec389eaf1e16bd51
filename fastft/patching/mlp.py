"""Whole gated MLP blocks with LoRA on gate/up/down through fastft.kernels.lora_mlp (one autograd node).

lora_mlp takes no bias, and one LoRA dropout probability for all three projections (each draws its own mask, as
PEFT's modules do); a block whose projections' dropouts differ runs its own forward, where each projection still
goes through lora_linear when the lora kernel is on.
"""
from ..kernels import lora_mlp
from .install import foreign_patch, install, is_ours, ours, plain_forward
from .lora import dropout_p, kernel_adapter

_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


def _bundle(proj) -> tuple[tuple | None, str | None]:
    """((weight, lora_a, lora_b, scaling, dropout module), None) for lora_mlp, or (None, why this projection can't)."""
    adapter, reason = kernel_adapter(proj)
    if reason:
        return None, reason
    base = proj.get_base_layer()
    if base.bias is not None:
        return None, "a projection has a bias (lora_mlp takes none)"
    lora_a, lora_b = proj.lora_A[adapter].weight, proj.lora_B[adapter].weight
    return (base.weight, lora_a, lora_b, proj.scaling[adapter], proj.lora_dropout[adapter]), None


def _bundles(mlp):
    """(gate, up, down bundles for lora_mlp now, their dropout probability), or None when the block must run its
    own forward."""
    bundles = []
    for name in _PROJECTIONS:
        bundle, _ = _bundle(getattr(mlp, name))
        if bundle is None:
            return None
        bundles.append(bundle)
    probabilities = {dropout_p(bundle[-1]) for bundle in bundles}
    if len(probabilities) > 1:  # lora_mlp takes one
        return None
    return [bundle[:-1] for bundle in bundles], probabilities.pop()


@ours
def mlp_forward(self, x, *, activation: str, recompute: bool = False):
    fused = _bundles(self)
    if fused is None:
        return plain_forward(self, x)
    bundles, p = fused
    return lora_mlp(x, *bundles, activation=activation, dropout_p=p, recompute=recompute)


def _block_reason(mlp, activation, act_name) -> str | None:
    if activation is None:
        return f"activation {act_name} has no fused gated kernel (swiglu: silu; geglu: gelu_pytorch_tanh)"
    for name in _PROJECTIONS:
        reason = _bundle(getattr(mlp, name))[1]
        if reason:
            return f"{name}: {reason}"
    return foreign_patch(mlp)


def recomputing_blocks(model) -> int:
    """How many MLP blocks recompute gate and up in backward (selective checkpointing), read from the live modules."""
    return sum(1 for m in model.modules() if is_ours(m) and m.forward.__func__.keywords.get("recompute", False))


def patch_mlps(model, family, text_config, report, recompute: bool = False) -> None:
    """recompute: selective checkpointing (fastft.patching.checkpointing)."""
    activation, act_name = family.gated_activation(text_config)
    mlp_cls = family.cls("MLP")
    for name, module in model.named_modules():
        if type(module) is not mlp_cls:
            continue
        reason = _block_reason(module, activation, act_name)
        if reason:
            report.plain("mlp", name, reason)
            continue
        install(module, mlp_forward, activation=activation, recompute=recompute)
        report.patched("mlp")
