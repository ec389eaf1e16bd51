"""A family's RMSNorm modules (decoder norms, final norm, Qwen3/Gemma3 q/k norms) through fastft.kernels.rms_norm."""
from ..kernels import rms_norm
from .install import foreign_patch, install, ours


@ours
def norm_forward(self, x, *, eps_attr: str, offset: float, cast_before_weight: bool):
    return rms_norm(x, self.weight, getattr(self, eps_attr), offset=offset, cast_before_weight=cast_before_weight)


def patch_norms(model, family, report) -> None:
    norm_cls = family.cls("RMSNorm")
    for name, module in model.named_modules():
        if type(module) is not norm_cls:  # exact class: a subclass may change the math
            continue
        reason = foreign_patch(module)
        if reason:
            report.plain("rms_norm", name, reason)
            continue
        install(module, norm_forward, eps_attr=family.eps_attr, offset=family.norm_offset,
                cast_before_weight=family.cast_before_weight)
        report.patched("rms_norm")
