"""Compile every Triton launch of fastft.kernels' public API for real GPUs, on a CPU-only machine.

    python -m tests.kernels.gpu_compile --target 86 [--target 90] [--op lora|lce|ce|rms_norm|rope|act|all]
                                        [--dtype bf16] [--rank 16] [--json out.json] [--ttir-dir dir]

Each public function runs forward and backward on CPU tensors with FASTFT_KERNEL_BACKEND=triton while
`record_launches` replaces triton's JITFunction.run: a launch binds its arguments exactly as Triton would
(create_function_from_signature, _pack_args) and is recorded instead of run, so nothing is computed and the
outputs are garbage. For the same reason PyTorch's own matmuls (the cuBLAS base products, the head of
linear_cross_entropy) are skipped by a dispatch mode that returns empty results of the right shape: on the CPU
they would cost minutes (torch 2.13's bf16 `x @ w` with a row-major [K, N] w runs ~30 s for 256x3072x3072). Each distinct specialization (kernel, signature, constexprs, attributes, options,
target) is then compiled once with triton.compile for GPUTarget("cuda", cc, 32); the result is the shared
memory the launch needs (metadata.shared) against the target's opt-in limit, and the registers and spill bytes
from the ptxas bundled with triton. What this proves: the launch compiles for that target and fits its shared
memory. What it does not: that it runs correctly, or fast, on that GPU.

Contract with fastft.kernels (the "fake device"): while a launch is recorded for target sm_XX, these functions
answer as that GPU would, whatever device the tensors are on:
    fastft.kernels._device.shared_memory_limit(device) -> int     opt-in shared memory per block
    fastft.kernels._device.multiprocessor_count(device) -> int    SM count
    fastft.kernels._device.compute_capability(device) -> (major, minor)
    torch.cuda.get_device_properties(device), torch.cuda.get_device_capability(device)
(_device.device_guard is left alone: CPU tensors need no guard.) Every launch-size decision (tiles, stages,
split counts, chunk rows) must come from these; `tensor.is_cuda` cannot be faked, so it may pick the backend
or the guard but never a launch size. A new public function in kernels/_device.py makes the harness refuse to
run until it is faked here too. The harness must run with TRITON_INTERPRET unset (interpreted kernels have no
JITFunction.run to replace); tests run it in a subprocess for that reason.
"""
import argparse
import contextlib
import hashlib
import io
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time
import types
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field

if os.environ.get("TRITON_INTERPRET", "0") == "1":
    sys.exit("gpu_compile: unset TRITON_INTERPRET: the harness compiles real GPU code, the interpreter has none")
os.environ["FASTFT_KERNEL_BACKEND"] = "triton"
os.environ.setdefault("TRITON_DEFAULT_FP_FUSION", "1")  # triton 3.9's default, stated to silence its warning

import torch  # noqa: E402
import triton  # noqa: E402
from torch.utils._python_dispatch import TorchDispatchMode  # noqa: E402
from torch.utils._pytree import tree_map_only  # noqa: E402
from triton.backends.compiler import GPUTarget  # noqa: E402
from triton.compiler import ASTSource, make_backend  # noqa: E402
from triton.runtime import autotuner, jit  # noqa: E402

import fastft.kernels as K  # noqa: E402
from fastft.kernels import _device  # noqa: E402


@dataclass(frozen=True)
class Gpu:
    name: str
    shared_optin: int  # bytes per block, opt-in maximum (CUDA programming guide, table of technical specs)
    sms: int
    memory_gb: int


TARGETS = {
    80: Gpu("A100", 166_912, 108, 80),
    86: Gpu("RTX A6000", 101_376, 84, 48),
    89: Gpu("L4", 101_376, 58, 24),
    90: Gpu("H100 SXM", 232_448, 132, 80),
}
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
RANKS = (8, 16, 64, 128, 256)
DROPOUTS = (0.0, 0.05)
OPS = ("lora", "lce", "ce", "rms_norm", "rope", "act")
FAKED = ("shared_memory_limit", "multiprocessor_count", "compute_capability")
NOT_FAKED = ("device_guard",)


# ---------------------------------------------------------------- the fake device

def _fake_properties(cc: int):
    gpu = TARGETS[cc]
    return types.SimpleNamespace(
        name=f"{gpu.name} (faked by gpu_compile)", major=cc // 10, minor=cc % 10,
        multi_processor_count=gpu.sms, shared_memory_per_block_optin=gpu.shared_optin,
        shared_memory_per_block=49_152, total_memory=gpu.memory_gb << 30, warp_size=32,
    )


def _device_stand_ins(cc: int):
    props = _fake_properties(cc)
    return {
        "shared_memory_limit": lambda device=None: props.shared_memory_per_block_optin,
        "multiprocessor_count": lambda device=None: props.multi_processor_count,
        "compute_capability": lambda device=None: (props.major, props.minor),
    }


def _check_contract():
    public = {n for n, v in vars(_device).items() if callable(v) and not n.startswith("_")
              and getattr(v, "__module__", None) == _device.__name__}
    unknown = sorted(public - set(FAKED) - set(NOT_FAKED))
    if unknown:
        raise SystemExit(f"gpu_compile: kernels/_device.py defines {unknown}, which the harness does not fake; "
                         "add a stand-in to tests/kernels/gpu_compile.py (_device_stand_ins) before trusting it")


@contextlib.contextmanager
def fake_device(cc: int):
    """Every device query of fastft.kernels answers as target sm_<cc> (see the module docstring)."""
    _check_contract()
    props = _fake_properties(cc)
    stand_ins = _device_stand_ins(cc)
    originals = {name: getattr(_device, name) for name in FAKED}
    patches = [(torch.cuda, "get_device_properties", lambda device=None: props),
               (torch.cuda, "get_device_capability", lambda device=None: (props.major, props.minor))]
    # `from ._device import f` copies the function into the importing module: replace those bindings too.
    for module in [m for name, m in sys.modules.items() if name.startswith("fastft.kernels") and m]:
        for attr, value in list(vars(module).items()):
            for name, original in originals.items():
                if value is original:
                    patches.append((module, attr, stand_ins[name]))
    saved = [(obj, attr, getattr(obj, attr)) for obj, attr, _ in patches]
    try:
        for obj, attr, value in patches:
            setattr(obj, attr, value)
        yield props
    finally:
        for obj, attr, value in reversed(saved):
            setattr(obj, attr, value)


# ---------------------------------------------------------------- recording launches

@dataclass
class Launch:
    op: str
    dtype: str
    rank: int  # LoRA rank, None for the other ops
    case: str
    kernel: str
    target: int
    grid: tuple
    constexprs: dict
    num_warps: int
    num_stages: int
    key: str  # the specialization: launches with equal keys compile to the same binary
    spec: tuple = field(repr=False, default=None)  # (fn registry key, signature, constexprs, attrs, options)


class _Recorder:
    def __init__(self, cc: int):
        self.cc = cc
        self.backend = make_backend(GPUTarget("cuda", cc, 32))
        self.binders = {}
        self.launches = []
        self.context = {}

    def run(self, fn, args, grid, kwargs):
        """What JITFunction.run does up to the compile: bind, specialize, pack; then record instead of launch."""
        kwargs = dict(kwargs, debug=kwargs.get("debug", fn.debug) or triton.knobs.runtime.debug)
        if fn not in self.binders:
            self.binders[fn] = jit.create_function_from_signature(fn.signature, fn.params, self.backend)
        bound, specialization, options = self.binders[fn](*args, **kwargs)
        options, signature, constexprs, attrs = fn._pack_args(self.backend, kwargs, bound, specialization, options)
        grid = grid(bound) if callable(grid) else grid
        opts = {k: v for k, v in options.__dict__.items() if k != "extern_libs"}
        names = [p.name for p in fn.params]
        named = {names[path[0]]: value for path, value in constexprs.items()}
        fn_key = f"{fn.module}:{fn.fn.__qualname__}"
        key = repr((fn_key, self.cc, sorted(signature.items()), sorted(constexprs.items()),
                    sorted((k, repr(v)) for k, v in attrs.items()), sorted(opts.items())))
        self.launches.append(Launch(
            **self.context, kernel=fn.fn.__name__, target=self.cc,
            grid=tuple(grid), constexprs=named, num_warps=options.num_warps, num_stages=options.num_stages,
            key=key, spec=(fn_key, signature, constexprs, attrs, opts)))


_ATEN = torch.ops.aten
_MATMULS = {_ATEN.mm, _ATEN.addmm, _ATEN.addmm_, _ATEN.bmm, _ATEN.baddbmm, _ATEN.baddbmm_, _ATEN.addbmm, _ATEN.mv}


class _SkipMatmuls(TorchDispatchMode):
    """Dense matmuls return uninitialised tensors of their true shape, dtype and strides (from the meta device)."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func.overloadpacket not in _MATMULS:
            return func(*args, **kwargs)
        if "out" in kwargs:
            return kwargs["out"]
        if func.overloadpacket.__name__.endswith("_"):  # in place: the destination is the first argument
            return args[0]
        meta_args, meta_kwargs = tree_map_only(torch.Tensor, lambda t: t.to("meta"), (args, kwargs))
        result = func(*meta_args, **meta_kwargs)
        return torch.empty_strided(result.shape, result.stride(), dtype=result.dtype)


@contextlib.contextmanager
def record_launches(cc: int):
    """Inside, Triton launches are recorded (for target sm_<cc>) instead of run, the device is faked and
    PyTorch matmuls are skipped."""
    recorder = _Recorder(cc)
    saved_run, saved_tune = jit.JITFunction.run, autotuner.Autotuner.run

    def run(fn, *args, grid, warmup, **kwargs):
        recorder.run(fn, args, grid, kwargs)

    def tune(tuner, *args, **kwargs):
        # Any config that survives pruning may be the one chosen on the GPU: record them all.
        tuner.nargs = dict(zip(tuner.arg_names, args))
        for config in tuner.prune_configs(kwargs):
            tuner.fn.run(*args, **kwargs, **config.all_kwargs())
        tuner.nargs = None

    jit.JITFunction.run, autotuner.Autotuner.run = run, tune
    try:
        with fake_device(cc), _SkipMatmuls():
            yield recorder
    finally:
        jit.JITFunction.run, autotuner.Autotuner.run = saved_run, saved_tune


# ---------------------------------------------------------------- the public API cases

# Llama-3.2-3B: hidden 3072, intermediate 8192, 24 query / 8 key-value heads of 128, vocab 128,256.
# Gemma 3 4B: hidden 2560, vocab 262,144, head dim 256. Rows only change grids (and chunk counts), so few.
LORA_ROWS, LCE_ROWS, ELEMENTWISE_ROWS = 256, 64, 256
LORA_SHAPES = ((3072, 3072), (3072, 1024), (2048, 2048), (4096, 4096))  # (in, out) projections
MLP_SHAPE = (3072, 8192)
NORM_SIZES = (2048, 3072, 4096)
ROPE_SHAPES = ((24, 8, 128), (8, 4, 256))  # (query heads, key-value heads, head dim)
VOCABS = ((3072, 128_256), (2560, 262_144))  # (hidden, vocab)


@dataclass
class Case:
    label: str
    run: object  # calls the public function forward and backward
    rank: int = None  # LoRA rank


def _z(*shape, dtype, grad=False):
    # Uninitialised: nothing reads the values (launches are recorded, matmuls skipped), and filling a
    # 262,144 x 2560 head would cost seconds per case.
    return torch.empty(shape, dtype=dtype).requires_grad_(grad)


def _backward(*outputs):
    outputs = [o for o in outputs if o.requires_grad]
    torch.autograd.backward(outputs, [torch.empty_like(o) for o in outputs])


def _lora(dtype, ranks, dropouts):
    for n_in, n_out in LORA_SHAPES:
        for r in ranks:
            for p in dropouts:
                def run(n_in=n_in, n_out=n_out, r=r, p=p):
                    x = _z(LORA_ROWS, n_in, dtype=dtype, grad=True)
                    a, b = _z(r, n_in, dtype=dtype, grad=True), _z(n_out, r, dtype=dtype, grad=True)
                    _backward(K.lora_linear(x, _z(n_out, n_in, dtype=dtype), a, b, 2.0, None, p))
                yield Case(f"lora_linear {n_in}->{n_out} r={r} p={p}", run, r)
    hidden, inter = MLP_SHAPE
    for r in ranks:
        for activation in ("swiglu", "geglu"):
            for p in dropouts:
                def run(r=r, activation=activation, p=p):
                    x = _z(LORA_ROWS, hidden, dtype=dtype, grad=True)
                    bundle = lambda i, o: (_z(o, i, dtype=dtype), _z(r, i, dtype=dtype, grad=True),  # noqa: E731
                                           _z(o, r, dtype=dtype, grad=True), 2.0)
                    _backward(K.lora_mlp(x, bundle(hidden, inter), bundle(hidden, inter), bundle(inter, hidden),
                                         activation, dropout_p=p))
                yield Case(f"lora_mlp {hidden}x{inter} {activation} r={r} p={p}", run, r)


def _cross_entropy(dtype):
    for _, vocab in VOCABS:
        for softcap in (None, 30.0):
            def run(vocab=vocab, softcap=softcap):
                logits = _z(LCE_ROWS, vocab, dtype=dtype, grad=True)
                labels = torch.zeros(LCE_ROWS, dtype=torch.long)
                _backward(K.cross_entropy(logits, labels, softcap=softcap))
            yield Case(f"cross_entropy V={vocab} softcap={softcap}", run)


def _linear_cross_entropy(dtype):
    for hidden, vocab in VOCABS:
        for reduction in ("mean", "none"):
            def run(hidden=hidden, vocab=vocab, reduction=reduction):
                h = _z(LCE_ROWS, hidden, dtype=dtype, grad=True)
                labels = torch.zeros(LCE_ROWS, dtype=torch.long)
                loss = K.linear_cross_entropy(h, _z(vocab, hidden, dtype=dtype), labels, reduction=reduction)
                _backward(loss)
            yield Case(f"linear_cross_entropy H={hidden} V={vocab} {reduction}", run)


def _rms_norm(dtype):
    for hidden in NORM_SIZES:
        for offset in (0.0, 1.0):  # Llama's and Gemma's casting order
            def run(hidden=hidden, offset=offset):
                x = _z(ELEMENTWISE_ROWS, hidden, dtype=dtype, grad=True)
                _backward(K.rms_norm(x, _z(hidden, dtype=dtype, grad=True), offset=offset))
            yield Case(f"rms_norm H={hidden} offset={offset}", run)


def _rope(dtype):
    for q_heads, kv_heads, head_dim in ROPE_SHAPES:
        def run(q_heads=q_heads, kv_heads=kv_heads, head_dim=head_dim):
            seq = ELEMENTWISE_ROWS
            q = _z(1, seq, q_heads, head_dim, dtype=dtype, grad=True).transpose(1, 2)
            k = _z(1, seq, kv_heads, head_dim, dtype=dtype, grad=True).transpose(1, 2)
            cos = sin = _z(1, seq, head_dim, dtype=dtype)
            _backward(*K.apply_rope(q, k, cos, sin))
        yield Case(f"apply_rope Hq={q_heads} Hk={kv_heads} D={head_dim}", run)


def _activations(dtype):
    _, inter = MLP_SHAPE
    for name, fn in (("swiglu", K.swiglu), ("geglu tanh", K.geglu),
                     ("geglu erf", lambda g, u: K.geglu(g, u, approximate="none"))):
        def run(fn=fn):
            gate, up = (_z(ELEMENTWISE_ROWS, inter, dtype=dtype, grad=True) for _ in range(2))
            _backward(fn(gate, up))
        yield Case(f"{name} {ELEMENTWISE_ROWS}x{inter}", run)


def cases(op: str, dtype: torch.dtype, ranks=RANKS, dropouts=DROPOUTS):
    """The Cases of one op."""
    makers = {"lora": lambda: _lora(dtype, ranks, dropouts), "ce": lambda: _cross_entropy(dtype),
              "lce": lambda: _linear_cross_entropy(dtype), "rms_norm": lambda: _rms_norm(dtype),
              "rope": lambda: _rope(dtype), "act": lambda: _activations(dtype)}
    return makers[op]()


def collect_target(cc: int, ops, dtypes, ranks=RANKS, dropouts=DROPOUTS):
    """Every launch the public API makes on target sm_<cc> for these ops and dtypes (nothing compiled yet)."""
    with record_launches(cc) as recorder:
        for op in ops:
            for dtype_name in dtypes:
                for case in cases(op, DTYPES[dtype_name], ranks, dropouts):
                    recorder.context = dict(op=op, dtype=dtype_name, rank=case.rank,
                                            case=f"{dtype_name} {case.label}")
                    case.run()
    return recorder.launches


# ---------------------------------------------------------------- compiling

@dataclass
class Compiled:
    shared: int = None
    registers: int = None
    spill_stores: int = None
    spill_loads: int = None
    error: str = None
    ttir: str = None  # path of the TTIR file, when a TTIR directory was given


_PTXAS_REGS = re.compile(r"Used (\d+) registers")
_PTXAS_SPILLS = re.compile(r"(\d+) bytes spill stores, (\d+) bytes spill loads")


def _ptxas_usage(log: str, ptx: str, cc: int):
    """(registers, spill stores, spill loads) from the compile's ptxas log. When triton's cache answered the
    compile (no ptxas ran), from a ptxas run of our own, remembered beside triton's cache by the PTX's hash."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability

    arch = sm_arch_from_capability(cc)
    memo = os.path.join(triton.knobs.cache.dir, "gpu_compile_ptxas",
                        hashlib.sha256(f"{arch}\n{ptx}".encode()).hexdigest() + ".log")
    if not _PTXAS_REGS.search(log) and os.path.exists(memo):
        with open(memo) as f:
            log = f.read()
    if not _PTXAS_REGS.search(log):
        log = subprocess.run([get_ptxas(cc).path, "-v", "--regAllocOptLevel=2", f"--gpu-name={arch}", "-",
                              "-o", os.devnull], input=ptx, text=True, capture_output=True, check=True).stderr
    os.makedirs(os.path.dirname(memo), exist_ok=True)
    with open(memo, "w") as f:
        f.write(log)
    spills = _PTXAS_SPILLS.search(log)
    return int(_PTXAS_REGS.search(log).group(1)), int(spills.group(1)), int(spills.group(2))


def compile_spec(spec, cc: int, ttir_dir: str = None) -> Compiled:
    fn_key, signature, constexprs, attrs, options = spec
    fn = jit._triton_jit_function_registry[fn_key]
    triton.knobs.nvidia.dump_ptxas_log = True
    log = io.StringIO()
    try:
        with contextlib.redirect_stdout(log):
            kernel = triton.compile(ASTSource(fn, signature, constexprs, attrs),
                                    target=GPUTarget("cuda", cc, 32), options=dict(options))
        regs, stores, loads = _ptxas_usage(log.getvalue(), kernel.asm["ptx"], cc)
    except Exception as exc:  # a compile error is a result to report, not a crash of the harness
        return Compiled(error=f"{type(exc).__name__}: {str(exc).strip().splitlines()[0][:300]}")
    path = None
    if ttir_dir:
        path = os.path.join(ttir_dir, f"{fn.fn.__name__}-{kernel.hash}.ttir")
        with open(path, "w") as f:
            f.write(kernel.asm["ttir"])
    return Compiled(kernel.metadata.shared, regs, stores, loads, ttir=path)


def _collect_one(args):
    return collect_target(*args)


def _compile_one(args):
    return compile_spec(*args)


def _one_thread():
    torch.set_num_threads(1)  # the pool already keeps every core busy


def collect_and_compile(targets, ops, dtypes, ranks=RANKS, dropouts=DROPOUTS, jobs: int = 2, ttir_dir: str = None):
    """(launches, {specialization key: Compiled}): launches recorded per (target, dtype), then each distinct
    specialization compiled once, `jobs` processes at a time."""
    tasks = [(cc, ops, (dtype,), ranks, dropouts) for cc in targets for dtype in dtypes]
    # fork: the workers inherit the imported kernels, found again through triton's registry of JIT functions
    pool = ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("fork"), initializer=_one_thread)
    with pool:
        launches = [launch for part in pool.map(_collect_one, tasks) for launch in part]
        distinct = {launch.key: launch for launch in launches}
        work = [(launch.spec, launch.target, ttir_dir) for launch in distinct.values()]
        return launches, dict(zip(distinct, pool.map(_compile_one, work)))


# ---------------------------------------------------------------- reporting

def rows(launches, compiled):
    """One dict per launch: what ran where, and what it costs on the target."""
    out = []
    for launch in launches:
        result = compiled[launch.key]
        limit = TARGETS[launch.target].shared_optin
        over = result.error is None and result.shared > limit
        row = {k: v for k, v in asdict(launch).items() if k not in ("spec", "key")}
        row.update(asdict(result), shared_limit=limit,
                   status="ERROR" if result.error else "OVER" if over else "ok")
        out.append(row)
    return out


def _fmt_constexprs(constexprs: dict) -> str:
    return " ".join(f"{k}={v}" for k, v in constexprs.items())


def print_table(table, file=sys.stdout):
    header = (f"{'sm':>3} {'status':<6} {'shared':>8} {'regs':>4} {'spill st/ld':>13}  {'kernel':<24} "
              f"{'w':>2} {'s':>2}  {'op':<8} case | constexprs")
    print(header, file=file)
    for r in table:
        spills = "" if r["error"] else f"{r['spill_stores']}/{r['spill_loads']}"
        shared = "" if r["error"] else r["shared"]
        regs = "" if r["error"] else r["registers"]
        print(f"{r['target']:>3} {r['status']:<6} {shared:>8} {regs:>4} {spills:>13}  {r['kernel']:<24} "
              f"{r['num_warps']:>2} {r['num_stages']:>2}  {r['op']:<8} {r['case']} | "
              f"{_fmt_constexprs(r['constexprs'])}", file=file)
        if r["error"]:
            print(f"      {r['error']}", file=file)


def summary(table) -> str:
    lines = []
    for cc in sorted({r["target"] for r in table}):
        mine = [r for r in table if r["target"] == cc]
        over = sum(r["status"] == "OVER" for r in mine)
        errors = sum(r["status"] == "ERROR" for r in mine)
        spilling = [r for r in mine if not r["error"] and r["spill_stores"]]
        worst = max((r["spill_stores"] for r in spilling), default=0)
        lines.append(f"sm_{cc} (limit {TARGETS[cc].shared_optin:,} B): {len(mine)} launches, {over} over shared "
                     f"memory, {errors} compile errors, {len(spilling)} spilling (max {worst} B of spill stores)")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--target", type=int, action="append", choices=sorted(TARGETS),
                        help="compute capability (repeatable; default: all)")
    parser.add_argument("--op", action="append", choices=OPS + ("all",), help="repeatable; default: all")
    parser.add_argument("--dtype", action="append", choices=sorted(DTYPES), help="repeatable; default: all")
    parser.add_argument("--rank", type=int, action="append", help="LoRA rank (repeatable; default: 8 16 64 128 256)")
    parser.add_argument("--dropout", type=float, action="append", help="LoRA dropout (repeatable; default: 0 0.05)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="parallel compiles")
    parser.add_argument("--json", help="write every launch's row to this file")
    parser.add_argument("--ttir-dir", help="write each compile's TTIR here (for the int64 offset check)")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")
    args = parser.parse_args(argv)
    ops = OPS if not args.op or "all" in args.op else tuple(dict.fromkeys(args.op))
    if args.ttir_dir:
        os.makedirs(args.ttir_dir, exist_ok=True)
    start = time.time()
    launches, compiled = collect_and_compile(args.target or sorted(TARGETS), ops, args.dtype or list(DTYPES),
                                             tuple(args.rank or RANKS), tuple(args.dropout or DROPOUTS), args.jobs,
                                             args.ttir_dir)
    table = rows(launches, compiled)
    cpu = sum(getattr(os.times(), f) for f in ("user", "system", "children_user", "children_system"))
    print(f"{len(launches)} launches, {len(compiled)} distinct specializations compiled in {time.time() - start:.0f} s "
          f"({cpu:.0f} s of CPU)", file=sys.stderr)
    if not args.quiet:
        print_table(table)
    print(summary(table))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(table, f, indent=1, default=str)


if __name__ == "__main__":
    main()
