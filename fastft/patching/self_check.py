"""Before training on a GPU, each kernel kind runs once, forward and backward, on small inputs of the run's dtype
and widths, on Triton and on fastft's PyTorch path of the same algorithm. A launch error (Triton's OutOfResources
on a GPU smaller than the tiles assume, a compile error, anything raised) or a result off by more than TOLERANCE
turns that kind off for the run: apply_kernels then leaves the model's own forward in place for it.

The inputs are synthetic (seeded), so `fastft doctor` runs the same checks without a model. LoRA widths above
MAX_WIDTH and vocabularies above 8 x MAX_WIDTH are cut: LoRA tiles depend on dtype, rank and dropout, not on the
projection's width (its base products are cuBLAS's), and cross-entropy's block stops growing at 8,192 columns.
RMSNorm, RoPE and the loss keep the full hidden size and head dim, which their tiles do depend on. Triton compiles each kernel at its first launch; the check does those compiles before the first
step instead of in it, and they land in Triton's on-disk cache.
"""
import contextlib
import os
from dataclasses import dataclass

import torch

from ..kernels import apply_rope, linear_cross_entropy, lora_linear, lora_mlp, rms_norm
from ..kernels._backend import backend_choice

# kernel kind -> the recipe switch (kernels.<switch>) that turns its patch on or off
SWITCHES = {"lora_linear": "lora", "lora_mlp": "mlp", "rms_norm": "rms_norm", "rope": "rope", "loss": "loss"}
# Relative error allowed between the Triton and PyTorch paths in one dtype (fastft's kernel tolerances).
TOLERANCE = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 1e-2}
MAX_WIDTH = 4096
ROWS = 128
SKIP_VARIABLE = "FASTFT_KERNEL_SELF_CHECK"
FORCE = (f"{SKIP_VARIABLE}=0 keeps it unchecked; FASTFT_KERNEL_BACKEND=torch runs fastft's PyTorch path "
         "of every kernel")


@dataclass(frozen=True)
class Shapes:
    """The widths and dtypes the run's kernels will see."""

    dtype: torch.dtype  # the compute dtype: LoRA products and logits (the autocast dtype under mixed precision)
    hidden: int
    intermediate: int
    rank: int
    head_dim: int
    vocab: int
    activation: str | None = "swiglu"  # lora_mlp's; None: the MLP is not fused
    norm_offset: float = 0.0
    softcap: float | None = None
    dropout: float = 0.0
    quant_type: str | None = None  # "nf4"/"fp4": the LoRA base weights are bitsandbytes 4-bit
    # What RMSNorm and RoPE read: the residual stream's dtype, fp32 after prepare_model_for_kbit_training (QLoRA),
    # where neither has a matmul for autocast to recast. None: dtype.
    residual_dtype: torch.dtype | None = None


@dataclass(frozen=True)
class Result:
    kind: str
    error: str | None  # None: passed
    detail: str  # the largest relative error, or what went wrong

    def line(self) -> str:
        if self.error is None:
            return f"self-check {self.kind}: ok ({self.detail})"
        return (f"self-check {self.kind}: OFF for this run, the model's own code runs instead: {self.error}; "
                f"{FORCE}; kernels.{SWITCHES[self.kind]}: false skips it")


@contextlib.contextmanager
def backend(name: str):
    """FASTFT_KERNEL_BACKEND for the length of the block (the kernels read it at every call)."""
    before = os.environ.get("FASTFT_KERNEL_BACKEND")
    os.environ["FASTFT_KERNEL_BACKEND"] = name
    try:
        yield
    finally:
        if before is None:
            del os.environ["FASTFT_KERNEL_BACKEND"]
        else:
            os.environ["FASTFT_KERNEL_BACKEND"] = before


def describe(error: Exception) -> str:
    """The error's type and first line: what one status line can hold."""
    first_line = next(iter(str(error).splitlines()), "")
    return f"{type(error).__name__}: {first_line}" if first_line else type(error).__name__


def _rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    out, ref = out.detach().double(), ref.detach().double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).norm() / ref.norm().clamp_min(1e-30)).item()


class _Inputs:
    """Seeded tensors on the CPU generator (the same on every device), moved to the check's device."""

    def __init__(self, device, dtype, rows):
        self.device, self.dtype, self.rows = device, dtype, rows
        self.gen = torch.Generator().manual_seed(0)

    def __call__(self, *shape, scale=1.0, dtype=None, grad=False):
        t = (torch.randn(*shape, generator=self.gen) * scale).to(self.device, dtype or self.dtype)
        return t.requires_grad_(grad)

    def base_weight(self, out_features, in_features, quant_type):
        weight = self(out_features, in_features, scale=in_features ** -0.5)
        if quant_type is None:
            return weight
        import bitsandbytes as bnb

        # Moving a Params4bit to its device quantizes it, as loading a 4-bit checkpoint does.
        return bnb.nn.Params4bit(weight.cpu(), requires_grad=False, quant_type=quant_type).to(self.device)


def _lora_bundle(make, shapes, out_features, in_features):
    return (make.base_weight(out_features, in_features, shapes.quant_type),
            make(shapes.rank, in_features, scale=in_features ** -0.5, grad=True),
            make(out_features, shapes.rank, scale=shapes.rank ** -0.5, grad=True), 2.0)


def _lora_linear(make, shapes):
    hidden = min(shapes.hidden, MAX_WIDTH)
    x = make(make.rows, hidden, grad=True)
    bundle = _lora_bundle(make, shapes, hidden, hidden)
    return lambda: lora_linear(x, *bundle), [x, *bundle[1:3]]


def _lora_mlp(make, shapes):
    hidden, inner = min(shapes.hidden, MAX_WIDTH), min(shapes.intermediate, MAX_WIDTH)
    x = make(make.rows, hidden, grad=True)
    gate, up = _lora_bundle(make, shapes, inner, hidden), _lora_bundle(make, shapes, inner, hidden)
    down = _lora_bundle(make, shapes, hidden, inner)
    leaves = [x] + [t for bundle in (gate, up, down) for t in bundle[1:3]]
    return lambda: lora_mlp(x, gate, up, down, activation=shapes.activation), leaves


def _rms_norm(make, shapes):
    x = make(make.rows, shapes.hidden, grad=True)
    weight = make(shapes.hidden, scale=0.5)  # frozen, as under LoRA
    return lambda: rms_norm(x, weight, 1e-6, offset=shapes.norm_offset), [x]


def _rope(make, shapes):
    q, k = make(2, 4, make.rows // 2, shapes.head_dim, grad=True), make(2, 2, make.rows // 2, shapes.head_dim, grad=True)
    angles = torch.arange(make.rows // 2)[:, None] * 0.1 * torch.arange(1, shapes.head_dim // 2 + 1)[None, :]
    angles = torch.cat([angles, angles], dim=-1)[None]
    cos, sin = (f(angles).to(make.device, make.dtype) for f in (torch.cos, torch.sin))
    return lambda: apply_rope(q, k, cos, sin), [q, k]


def _loss(make, shapes):
    hidden, vocab = shapes.hidden, min(shapes.vocab, 8 * MAX_WIDTH)
    h = make(make.rows, hidden, grad=True)
    head = make(vocab, hidden, scale=hidden ** -0.5)  # frozen, as under LoRA
    labels = torch.randint(0, vocab, (make.rows,), generator=make.gen)
    labels[::4] = -100  # prompt positions
    labels = labels.to(make.device)
    return lambda: linear_cross_entropy(h, head, labels, softcap=shapes.softcap), [h]


_CASES = {"lora_linear": _lora_linear, "lora_mlp": _lora_mlp, "rms_norm": _rms_norm, "rope": _rope, "loss": _loss}


def _dtype_of(case, shapes: Shapes) -> torch.dtype:
    return shapes.residual_dtype or shapes.dtype if case in (_rms_norm, _rope) else shapes.dtype


def _run(case, shapes, device, name: str, rows: int) -> list[torch.Tensor]:
    """Forward and backward of one case on one backend: [outputs..., input and LoRA grads...]."""
    fn, leaves = case(_Inputs(device, _dtype_of(case, shapes), rows), shapes)
    with backend(name):
        out = fn()
        outs = out if isinstance(out, tuple) else (out,)
        torch.autograd.backward(outs, [torch.ones_like(o) for o in outs])
    return [o.detach() for o in outs] + [leaf.grad for leaf in leaves]


def _dropout_runs(shapes, device, name: str, rows: int) -> None:
    """LoRA dropout is its own compiled variant; the two paths draw different masks, so only check it runs clean."""
    make = _Inputs(device, shapes.dtype, rows)
    x = make(make.rows, min(shapes.hidden, MAX_WIDTH), grad=True)
    bundle = _lora_bundle(make, shapes, x.shape[1], x.shape[1])
    with backend(name):
        out = lora_linear(x, *bundle, dropout_p=shapes.dropout)
        out.sum().backward()
    if not all(torch.isfinite(t).all() for t in (out, x.grad, bundle[1].grad, bundle[2].grad)):
        raise FloatingPointError(f"non-finite values with dropout {shapes.dropout:g}")


def check_kind(kind: str, shapes: Shapes, device, name: str = "triton", rows: int = ROWS) -> Result:
    """Run one kernel kind on backend `name` against the PyTorch path on `device`, on `rows` tokens."""
    try:
        ours = _run(_CASES[kind], shapes, device, name, rows)
        if kind == "lora_linear" and shapes.dropout:
            _dropout_runs(shapes, device, name, rows)
    except Exception as error:  # any launch failure (OutOfResources, compile errors) turns the kind off
        return Result(kind, describe(error), "")
    ref = _run(_CASES[kind], shapes, device, "torch", rows)
    worst = max(_rel_err(o, r) for o, r in zip(ours, ref))
    # fp32 matmuls under torch's TF32 switch (which the Triton dots honour too) keep a half-precision mantissa
    dtype = _dtype_of(_CASES[kind], shapes)
    tf32 = dtype == torch.float32 and torch.backends.cuda.matmul.allow_tf32
    tol = TOLERANCE[torch.float16 if tf32 else dtype]
    what = f"largest relative error {worst:.1e}, {str(dtype).removeprefix('torch.')}"
    if not worst <= tol:
        return Result(kind, f"{name} differs from the PyTorch path: {what} > {tol:.0e}", what)
    return Result(kind, None, what)


def run_self_check(shapes: Shapes, device, name: str = "triton", kinds=tuple(_CASES), rows: int = ROWS) -> list[Result]:
    """One Result per kernel kind, in `kinds` order (lora_mlp only when the MLP has a fused activation)."""
    if shapes.activation is None:
        kinds = [kind for kind in kinds if kind != "lora_mlp"]
    return [check_kind(kind, shapes, device, name, rows) for kind in kinds]


def shapes_of(model, dtype: torch.dtype | None = None) -> Shapes:
    """The run's widths from a PEFT model: its text config, the first LoRA layer's rank, dropout and base weight."""
    from ..models.families import family_for, text_config

    config = text_config(model.config)
    family, _ = family_for(model.config)
    layer = next((m for m in model.modules() if hasattr(m, "lora_A") and m.lora_A), None)
    rank, dropout, quant = 8, 0.0, None
    if layer is not None:
        adapter = next(iter(layer.lora_A))
        rank = layer.r[adapter]
        dropout = float(getattr(layer.lora_dropout[adapter], "p", 0.0))
        state = getattr(layer.get_base_layer().weight, "quant_state", None)
        quant = getattr(state, "quant_type", None)
    hidden = config.hidden_size
    return Shapes(
        dtype=dtype or model.dtype, residual_dtype=model.dtype, hidden=hidden, intermediate=getattr(config, "intermediate_size", None) or 4 * hidden,
        rank=rank, head_dim=getattr(config, "head_dim", None) or hidden // config.num_attention_heads,
        vocab=config.vocab_size,
        activation=family.gated_activation(config)[0] if family else None,
        norm_offset=family.norm_offset if family else 0.0,
        softcap=getattr(config, "final_logit_softcapping", None), dropout=dropout, quant_type=quant,
    )


def _skip_reason(device: torch.device) -> str | None:
    if device.type != "cuda":
        return "skipped on CPU: PyTorch paths run"
    if backend_choice() == "torch":
        return "skipped: FASTFT_KERNEL_BACKEND=torch runs the PyTorch paths"
    if os.environ.get(SKIP_VARIABLE, "1").strip() == "0":
        return f"skipped ({SKIP_VARIABLE}=0): kernels run unchecked"
    return None


def check_before_patching(model, on: dict, dtype=None, name: str | None = None,
                          device=None) -> tuple[list[str], set[str]]:
    """(summary lines, the kernels.<switch> names the check turned off) for the kinds `on` enables.
    name=None: Triton on a CUDA device, skipped elsewhere; a backend name runs it anyway (tests: the interpreter).
    device: where the run trains (default: where the model is now)."""
    device = next(model.parameters()).device if device is None else torch.device(device)
    if name is None:
        reason = _skip_reason(device)
        if reason:
            return [f"self-check {reason}"], set()
        name = "triton"
    try:
        shapes = shapes_of(model, dtype)
    except AttributeError as error:  # an architecture whose config names its widths otherwise
        return [f"self-check skipped: cannot read the model's widths ({describe(error)}); kernels run unchecked"], set()
    kinds = [kind for kind, switch in SWITCHES.items() if on.get(switch)]
    results = run_self_check(shapes, device, name, kinds)
    return [result.line() for result in results], {SWITCHES[result.kind] for result in results if result.error}
