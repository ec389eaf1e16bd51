"""Replacing one module instance's forward, and refusing to when someone else already replaced it.

Patches are per instance (an attribute named forward), so other models of the same class in the process keep
transformers' code. Fallbacks call the class's own forward, which is transformers' or PEFT's original.
"""
import functools
import types

# The forwards we install are functools.partial objects over these functions; see is_ours.
_OURS = set()
_ORIGINAL_HOMES = ("transformers.", "peft.")


def ours(fn):
    """Mark a module-level function as a fastft forward replacement."""
    _OURS.add(fn)
    return fn


def installed(module):
    """The fastft function installed as this module's forward (see install), or None."""
    forward = module.__dict__.get("forward")
    fn = getattr(forward.__func__, "func", None) if isinstance(forward, types.MethodType) else None
    return fn if fn in _OURS else None


def is_ours(module) -> bool:
    return installed(module) is not None


def foreign_patch(module) -> str | None:
    """Why this module's forward is not transformers'/PEFT's own (accelerate hook, Liger, Unsloth), else None."""
    if "forward" in module.__dict__ and not is_ours(module):
        return "its forward was already replaced on the instance (accelerate hook or another patcher)"
    home = getattr(type(module).forward, "__module__", "") or ""
    if not home.startswith(_ORIGINAL_HOMES):
        return f"its class forward comes from {home}, not transformers/PEFT"
    return None


def install(module, fn, **bound) -> None:
    """module.forward = fn(module, *args, **bound, **kwargs); idempotent (a second install replaces the first)."""
    module.forward = types.MethodType(functools.partial(fn, **bound), module)


def plain_forward(module, *args, **kwargs):
    """The class's own forward: the plain path a patched module falls back to."""
    return type(module).forward(module, *args, **kwargs)


def one_active_adapter(layer, adapters, merged: str, active_what: str) -> tuple[str | None, str | None]:
    """(the one active adapter of a PEFT layer among `adapters`, None) or (None, why the layer's own forward must run):
    what can change after patching, in the state every PEFT tuner layer keeps (merged, disabled, which are active).
    `merged` says what merging means for this layer; `active_what` names its adapters in the count's message."""
    if layer.merged:
        return None, merged
    if layer.disable_adapters:
        return None, "adapters are disabled"
    active = [name for name in layer.active_adapters if name in adapters]
    if len(active) != 1:
        return None, f"{len(active)} active {active_what}"
    return active[0], None
