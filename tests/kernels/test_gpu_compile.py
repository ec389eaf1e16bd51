"""Every Triton launch of the public kernel API, compiled for sm_80, sm_86, sm_89 and sm_90 on the CPU.

One run of tests/kernels/gpu_compile.py (in a subprocess: this process runs Triton's interpreter) records the
launches of lora_linear, lora_mlp, apply_rope, rms_norm, swiglu, geglu, cross_entropy and linear_cross_entropy,
forward and backward, at bf16/fp16/fp32, LoRA r in {8, 16, 64, 128, 256} with dropout 0 and 0.05, on Llama-3.2-3B
and Gemma 3 shapes, and compiles each distinct specialization once per target. The tests read its rows: shared
memory within each target's opt-in limit, zero spills at half precision for r <= 64, and 64-bit pointer offsets
wherever a program id reaches an address. The full launch table is written to the pytest tmp dir and printed
(run with -s to see it). Proven: each launch compiles for the target and fits its shared memory. Not proven: that
it runs correctly or fast there.
"""
import json
import os
import re
import signal
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import pytest

# About 10 minutes of CPU on 2 cores (each distinct specialization compiled once); more when the machine is shared.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

ROOT = Path(__file__).resolve().parents[2]
HALF = ("bf16", "fp16")
MAX_SPILL_FREE_RANK = 64


@pytest.fixture(scope="module")
def launches(tmp_path_factory):
    out = tmp_path_factory.mktemp("gpu_compile")
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    # Its own session, so a timeout ends the compile workers too, not only the parent.
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.kernels.gpu_compile", "--json", str(out / "launches.json"),
         "--ttir-dir", str(out / "ttir")],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )
    try:
        stdout, stderr = proc.communicate(timeout=3500)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    table = out / "table.txt"
    table.write_text(stdout)
    print(f"\n{stdout}\n{stderr[-2000:]}\nlaunch table: {table}")
    assert proc.returncode == 0, f"gpu_compile failed:\n{stderr[-4000:]}"
    return json.loads((out / "launches.json").read_text())


def _describe(row) -> str:
    cost = row["error"] or (f"{row['shared']:,} B shared (limit {row['shared_limit']:,}), {row['registers']} regs, "
                            f"{row['spill_stores']} B spill stores")
    return f"sm_{row['target']} {row['kernel']} [{row['op']}: {row['case']}] warps={row['num_warps']} " \
           f"stages={row['num_stages']}: {cost}"


def _failures(rows, bad, limit=40) -> str:
    failing = [r for r in rows if bad(r)]
    lines = [_describe(r) for r in failing[:limit]]
    if len(failing) > limit:
        lines.append(f"... and {len(failing) - limit} more")
    return f"{len(failing)} of {len(rows)} launches:\n" + "\n".join(lines)


def test_every_launch_covers_every_target_and_op(launches):
    """The matrix is what the issue asks for, so a filter bug cannot make the other tests pass vacuously."""
    assert {r["target"] for r in launches} == {80, 86, 89, 90}
    assert {r["op"] for r in launches} == {"lora", "lce", "ce", "rms_norm", "rope", "act"}
    assert {r["dtype"] for r in launches} == {"bf16", "fp16", "fp32"}
    assert {r["rank"] for r in launches if r["op"] == "lora"} == {8, 16, 64, 128, 256}


def test_every_launch_compiles_within_shared_memory(launches):
    errors = [r for r in launches if r["status"] == "ERROR"]
    over = [r for r in launches if r["status"] == "OVER"]
    assert not errors and not over, (
        f"compile errors: {_failures(launches, lambda r: r['status'] == 'ERROR')}\n\n"
        f"over the target's shared memory: {_failures(launches, lambda r: r['status'] == 'OVER')}"
    )


def test_no_register_spills_at_half_precision_up_to_rank_64(launches):
    def spills(r):
        low_rank = r["rank"] is None or r["rank"] <= MAX_SPILL_FREE_RANK
        return r["dtype"] in HALF and low_rank and not r["error"] and r["spill_stores"] > 0

    assert not any(spills(r) for r in launches), f"register spills: {_failures(launches, spills)}"


# ---------------------------------------------------------------- 64-bit offsets, from the TTIR

_DEF = re.compile(r"^\s*(%[\w#:]+(?:\s*,\s*%[\w#:]+)*)\s*=\s*([\w.]+)(.*)$")
_NAME = re.compile(r"%[\w]+")
_LOC_REF = re.compile(r"loc\((#loc\d*)\)\s*$")
_LOC_DEF = re.compile(r"^(#loc\d*)\s*=\s*loc\((.*)\)\s*$")
_FILE_LOC = re.compile(r'"([^"]+\.py)":(\d+)')
_INT_WIDTH = re.compile(r"i(\d+)>?\s*$")
_SHAPE_OPS = ("tt.splat", "tt.broadcast", "tt.expand_dims", "tt.reshape", "arith.extsi", "arith.extui",
              "arith.trunci")


class _Ttir:
    """The SSA definitions of one kernel's TTIR: name -> (op, operand names, result type, source line)."""

    def __init__(self, text: str):
        locs = dict(m.groups() for m in map(_LOC_DEF.match, text.splitlines()) if m)
        self.defs = {}
        for line in text.splitlines():
            ref = _LOC_REF.search(line)
            body = _LOC_REF.sub("", line)
            match = _DEF.match(body)
            if not match:
                continue
            results, op, rest = match.groups()
            operands_part, _, type_part = rest.rpartition(" : ") if " : " in rest else (rest, "", "")
            defined = [n.split("#")[0].split(":")[0] for n in _NAME.findall(results)]
            operands = _NAME.findall(operands_part)
            if op == "scf.for":  # the induction variable and iter_args are defined here, from the bounds and inits
                inner = re.findall(r"(%[\w]+)\s*=", operands_part)
                defined += inner
                operands = [n for n in operands if n not in inner]
            where = self._source(ref.group(1) if ref else None, locs)
            for name in defined:
                self.defs[name] = (op, operands, type_part.strip(), where)
        self.from_pid = self._derived_from_pid()

    @staticmethod
    def _source(ref, locs) -> str:
        for _ in range(8):  # NameLoc("x"(#locN)) chains end in a file:line:col location
            if ref is None or ref not in locs:
                return "?"
            found = _FILE_LOC.search(locs[ref])
            if found:
                return f"{Path(found.group(1)).name}:{found.group(2)}"
            inner = re.search(r"(#loc\d*)", locs[ref])
            ref = inner.group(1) if inner else None
        return "?"

    def _derived_from_pid(self) -> set:
        derived = {n for n, (op, *_) in self.defs.items() if op == "tt.get_program_id"}
        changed = True
        while changed:  # a fixed point, so loop-carried values are covered whatever their textual order
            changed = False
            for name, (_, operands, _, _) in self.defs.items():
                if name not in derived and any(o in derived for o in operands):
                    derived.add(name)
                    changed = True
        return derived

    def is_constant(self, name: str) -> bool:
        op, operands, _, _ = self.defs.get(name, ("", [], "", ""))
        if op == "arith.constant":
            return True
        return op in _SHAPE_OPS and all(self.is_constant(o) for o in operands)

    def slice(self, name: str) -> set:
        seen, stack = set(), [name]
        while stack:
            n = stack.pop()
            if n in seen or n not in self.defs:
                continue
            seen.add(n)
            stack += self.defs[n][1]
        return seen


def _width(type_text: str) -> int:
    found = _INT_WIDTH.search(type_text.split(",")[-1])
    return int(found.group(1)) if found else 64


def offset_violations(text: str) -> list:
    """Why the pointer offsets of one kernel's TTIR could overflow: a list of readable reasons (empty if none).

    The check, on the SSA graph of the TTIR (Triton's IR before any GPU lowering):
    1. every tt.addptr whose offset depends on tt.get_program_id takes a 64-bit offset;
    2. in the backward slice of such an offset, no 32-bit arith.muli / arith.shli multiplies a program-id-derived
       value by a non-constant (a stride, a row length, a split size): the index is widened *before* it is scaled,
       so `(pid * stride).to(tl.int64)` fails while `pid.to(tl.int64) * stride` and
       `(pid * BLOCK + tl.arange(0, BLOCK)).to(tl.int64) * stride` pass. 32-bit tile arithmetic with constexpr
       factors is allowed: it is bounded by the grid, not by the tensor size.
    Values are program-id-derived through any op (a fixed point over the graph, so loop-carried values count).
    Not checked: a flattened index pid * BLOCK in 32 bits over a grid that covers more than 2**31 elements.
    """
    ir = _Ttir(text)
    reasons = []
    for op, operands, types, where in ir.defs.values():
        if op != "tt.addptr" or len(operands) != 2 or operands[1] not in ir.from_pid:
            continue
        offset = operands[1]
        if _width(types) < 64:
            reasons.append(f"{where}: {_width(types)}-bit pointer offset derived from the program id")
        for dep in ir.slice(offset):
            dep_op, dep_operands, dep_type, dep_where = ir.defs[dep]
            if dep_op not in ("arith.muli", "arith.shli") or _width(dep_type) >= 64:
                continue
            if any(o in ir.from_pid for o in dep_operands) and not all(
                    o in ir.from_pid or ir.is_constant(o) for o in dep_operands):
                reasons.append(f"{dep_where}: 32-bit product of a program-id-derived index and a runtime value "
                               f"before the offset is widened")
            elif sum(o in ir.from_pid for o in dep_operands) == 2:
                reasons.append(f"{dep_where}: 32-bit product of two program-id-derived values")
    return sorted(set(reasons))


def test_offset_check_catches_32_bit_offsets():
    """The checker itself, on TTIR written the way Triton prints it: a 32-bit row offset fails, a widened one passes."""
    head = ('  tt.func public @k(%x: !tt.ptr<f32> loc(#loc), %stride: i32 loc(#loc)) {\n'
            '    %c = arith.constant 64 : i32 loc(#loc1)\n'
            '    %pid = tt.get_program_id x : i32 loc(#loc1)\n')
    narrow = head + ('    %row = arith.muli %pid, %stride : i32 loc(#loc2)\n'
                     '    %p = tt.addptr %x, %row : !tt.ptr<f32>, i32 loc(#loc2)\n')
    late = head + ('    %row = arith.muli %pid, %stride : i32 loc(#loc2)\n'
                   '    %wide = arith.extsi %row : i32 to i64 loc(#loc2)\n'
                   '    %p = tt.addptr %x, %wide : !tt.ptr<f32>, i64 loc(#loc2)\n')
    good = head + ('    %tile = arith.muli %pid, %c : i32 loc(#loc1)\n'
                   '    %wide = arith.extsi %tile : i32 to i64 loc(#loc2)\n'
                   '    %s = arith.extsi %stride : i32 to i64 loc(#loc2)\n'
                   '    %off = arith.muli %wide, %s : i64 loc(#loc2)\n'
                   '    %p = tt.addptr %x, %off : !tt.ptr<f32>, i64 loc(#loc2)\n')
    locs = '#loc = loc("k.py":1:0)\n#loc1 = loc("k.py":2:0)\n#loc2 = loc("row"(#loc3))\n#loc3 = loc("k.py":3:4)\n'
    assert offset_violations(locs + narrow) == [
        "k.py:3: 32-bit pointer offset derived from the program id",
        "k.py:3: 32-bit product of a program-id-derived index and a runtime value before the offset is widened",
    ]
    assert offset_violations(locs + late) == [
        "k.py:3: 32-bit product of a program-id-derived index and a runtime value before the offset is widened"]
    assert offset_violations(locs + good) == []


def test_program_id_offsets_are_64_bit(launches):
    """Every pointer offset derived from a program id is 64-bit (see offset_violations), so N x V > 2**31 works."""
    by_kernel = defaultdict(set)
    files = {r["ttir"] for r in launches if r["ttir"]}
    assert files, "gpu_compile wrote no TTIR"
    for path in sorted(files):
        kernel = Path(path).name.rsplit("-", 1)[0]
        by_kernel[kernel].update(offset_violations(Path(path).read_text()))
    failing = {k: sorted(v) for k, v in by_kernel.items() if v}
    assert not failing, "32-bit offsets from program ids:\n" + "\n".join(
        f"{kernel}:\n  " + "\n  ".join(reasons) for kernel, reasons in sorted(failing.items()))
