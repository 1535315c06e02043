"""GPU peak throughput and memory: the one table behind `llmctl budget`, `flops estimate` and live MFU.

    spec = gpu_by_name("L4")                       # what a user types: names and aliases
    spec = detect_gpu("NVIDIA H100 80GB HBM3")     # what torch.cuda.get_device_name() returns
    peak_flops(spec, "bf16")                       # 1.21e14 FLOP/s, dense

Every figure is the DENSE peak. NVIDIA's datasheets print the tensor-core figures with 2:4 structured
sparsity first (marked with an asterisk); those are exactly twice the dense rate, and no ordinary
training run can use them, so an MFU against them would read half of what it is. Where a datasheet
only prints the starred figure we store it as `starred / 2` so the source stays checkable.
Pure Python: no torch.
"""

from __future__ import annotations

import difflib
import re
from dataclasses import dataclass

from llmctl.errors import LlmctlError

TERA = 1e12


@dataclass(frozen=True)
class GpuSpec:
    """One GPU model: dense peak TFLOP/s per dtype (None: no tensor-core path for it), memory and power."""

    name: str
    """The name users type and output shows (`H100-SXM`)."""
    description: str
    """The full product name."""
    aliases: tuple[str, ...]
    """Other names `--gpu` accepts (case, spaces and dashes never matter)."""
    fp32: float
    """Plain FP32 (CUDA cores, no TF32), TFLOP/s."""
    tf32: float | None
    """TF32 tensor cores, dense, TFLOP/s."""
    bf16: float | None
    """BF16 tensor cores with FP32 accumulate, dense, TFLOP/s."""
    fp16: float | None
    """FP16 tensor cores with FP32 accumulate, dense, TFLOP/s."""
    fp8: float | None
    """FP8 tensor cores, dense, TFLOP/s."""
    memory_gib: float
    """Device memory. Datasheets say "80GB" for 80 GiB of HBM, so the figure is read as GiB."""
    tdp_w: float
    """Maximum board power (TDP), watts."""
    patterns: tuple[str, ...]
    """Regular expressions that must match the WHOLE normalised torch device name."""
    source: str
    """Where the figures come from."""


# Sources. The comment above each entry quotes its figures; a starred one is with sparsity, stored halved.
_H100 = "https://resources.nvidia.com/en-us-tensor-core/nvidia-tensor-core-gpu-datasheet"
_H200 = "https://www.nvidia.com/en-us/data-center/h200/ (specifications)"
_A100 = "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a100/pdf/nvidia-a100-datasheet-us-nvidia-1758950-r4-web.pdf"
_L40S = "https://www.nvidia.com/en-us/data-center/l40s/ (specifications)"
_L4 = "https://www.nvidia.com/en-us/data-center/l4/ (specifications)"
_A10 = "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/a10/pdf/a10-datasheet.pdf"
_ADA = "https://images.nvidia.com/aem-dam/Solutions/geforce/ada/nvidia-ada-gpu-architecture.pdf (appendix A)"
_GA102 = (
    "https://www.nvidia.com/content/PDF/nvidia-ampere-ga-102-gpu-architecture-whitepaper-v2.pdf (appendix A)"
)
_V100 = (
    "https://images.nvidia.com/content/technologies/volta/pdf/volta-v100-datasheet-update-us-1165301-r5.pdf"
)
_T4 = "https://www.nvidia.com/content/dam/en-zz/Solutions/Data-Center/tesla-t4/t4-tensor-core-datasheet-951643.pdf"

# Ordered most specific first, so a name that could match two entries meets the narrower one first.
GPUS: tuple[GpuSpec, ...] = (
    # _H200: H200 NVL 60 FP32; 835* TF32; 1,671* BF16/FP16; 3,341* FP8; 141 GB; up to 600 W.
    GpuSpec(
        "H200-NVL",
        "NVIDIA H200 NVL 141GB",
        (),
        60.0,
        835 / 2,
        1671 / 2,
        1671 / 2,
        3341 / 2,
        141,
        600,
        (r"h200 nvl",),
        _H200,
    ),
    # _H200: H200 SXM 67 FP32; 989* TF32; 1,979* BF16/FP16; 3,958* FP8; 141 GB; up to 700 W.
    GpuSpec(
        "H200",
        "NVIDIA H200 SXM 141GB",
        ("H200-SXM",),
        67.0,
        989 / 2,
        1979 / 2,
        1979 / 2,
        3958 / 2,
        141,
        700,
        (r"h200( sxm\d?)?( 141gb)?( hbm3e)?",),
        _H200,
    ),
    # _H100: H100 NVL 60 FP32; 835* TF32; 1,671* BF16; 3,341* FP8; 94 GB; 350-400 W.
    GpuSpec(
        "H100-NVL",
        "NVIDIA H100 NVL 94GB",
        (),
        60.0,
        835 / 2,
        1671 / 2,
        1671 / 2,
        3341 / 2,
        94,
        400,
        (r"h100 nvl( \d+gb)?",),
        _H100,
    ),
    # _H100: H100 PCIe 51 FP32; 756* TF32; 1,513* BF16/FP16; 3,026* FP8; 80 GB HBM2e; 300-350 W.
    GpuSpec(
        "H100-PCIe",
        "NVIDIA H100 PCIe 80GB",
        (),
        51.0,
        756 / 2,
        1513 / 2,
        1513 / 2,
        3026 / 2,
        80,
        350,
        (r"h100 pcie( \d+gb)?( hbm2e)?", r"h100 \d+gb (pcie|hbm2e)"),
        _H100,
    ),
    # _H100: H100 SXM 67 FP32; 989* TF32; 1,979* BF16/FP16; 3,958* FP8; 80 GB HBM3; up to 700 W.
    GpuSpec(
        "H100-SXM",
        "NVIDIA H100 SXM5 80GB",
        ("H100",),
        67.0,
        989 / 2,
        1979 / 2,
        1979 / 2,
        3958 / 2,
        80,
        700,
        (r"h100 (sxm\d? )?\d+gb hbm3", r"h100 sxm\d?( \d+gb)?"),
        _H100,
    ),
    # _A100: 19.5 FP32; 156 (312*) TF32; 312 (624*) BF16/FP16; no FP8. SXM 400 W; PCIe 250 W (40GB), 300 W (80GB).
    GpuSpec(
        "A100-PCIe-80GB",
        "NVIDIA A100 PCIe 80GB",
        (),
        19.5,
        156,
        312,
        312,
        None,
        80,
        300,
        (r"a100 80gb pcie", r"a100 pcie 80gb"),
        _A100,
    ),
    GpuSpec(
        "A100-PCIe-40GB",
        "NVIDIA A100 PCIe 40GB",
        ("A100-PCIe",),
        19.5,
        156,
        312,
        312,
        None,
        40,
        250,
        (r"a100 pcie( 40gb)?", r"a100 40gb pcie"),
        _A100,
    ),
    GpuSpec(
        "A100-80GB",
        "NVIDIA A100 SXM4 80GB",
        ("A100",),
        19.5,
        156,
        312,
        312,
        None,
        80,
        400,
        (r"a100 sxm\d? 80gb", r"a100 80gb( sxm\d?)?"),
        _A100,
    ),
    GpuSpec(
        "A100-40GB",
        "NVIDIA A100 SXM4 40GB",
        (),
        19.5,
        156,
        312,
        312,
        None,
        40,
        400,
        (r"a100 sxm\d? 40gb", r"a100 40gb( sxm\d?)?"),
        _A100,
    ),
    # _L40S: 91.6 FP32; 183 (366*) TF32; 362.05 (733*) BF16/FP16; 733 (1,466*) FP8; 48 GB; 350 W.
    GpuSpec(
        "L40S", "NVIDIA L40S 48GB", (), 91.6, 366 / 2, 733 / 2, 733 / 2, 1466 / 2, 48, 350, (r"l40s",), _L40S
    ),
    # _L4: 30.3 FP32; 120* TF32; 242* BF16/FP16; 485* FP8; 24 GB; 72 W.
    GpuSpec("L4", "NVIDIA L4 24GB", (), 30.3, 120 / 2, 242 / 2, 242 / 2, 485 / 2, 24, 72, (r"l4",), _L4),
    # _A10: 31.2 FP32; 62.5 (125*) TF32; 125 (250*) BF16/FP16; 24 GB; 150 W. NVIDIA publishes no datasheet for
    # the AWS A10G; like most tools we use the A10's figures, and its 300 W board limit as nvidia-smi shows it.
    GpuSpec("A10G", "NVIDIA A10G 24GB (AWS)", (), 31.2, 62.5, 125, 125, None, 24, 300, (r"a10g",), _A10),
    GpuSpec("A10", "NVIDIA A10 24GB", (), 31.2, 62.5, 125, 125, None, 24, 150, (r"a10",), _A10),
    # _ADA: RTX 4090 82.6 FP32; 82.6 TF32; 165.2 BF16/FP16 and 330.3 FP8 with FP32 accumulate (GeForce parts
    # run FP32-accumulate tensor math at half the FP16-accumulate rate, and training accumulates in FP32); 450 W.
    GpuSpec(
        "RTX-4090",
        "NVIDIA GeForce RTX 4090 24GB",
        ("4090",),
        82.6,
        82.6,
        165.2,
        165.2,
        330.3,
        24,
        450,
        (r"rtx 4090",),
        _ADA,
    ),
    # _GA102: RTX 3090 35.6 FP32; 35.6 TF32; 71 BF16/FP16 with FP32 accumulate; no FP8; 350 W.
    GpuSpec(
        "RTX-3090",
        "NVIDIA GeForce RTX 3090 24GB",
        ("3090",),
        35.6,
        35.6,
        71.0,
        71.0,
        None,
        24,
        350,
        (r"rtx 3090",),
        _GA102,
    ),
    # _V100: SXM2 15.7 FP32, 125 FP16 tensor, 300 W; PCIe 14 FP32, 112 FP16 tensor, 250 W. No BF16, no TF32.
    GpuSpec(
        "V100-SXM2-32GB",
        "NVIDIA V100 SXM2 32GB",
        ("V100", "V100-32GB"),
        15.7,
        None,
        None,
        125,
        None,
        32,
        300,
        (r"v100 sxm2 32gb",),
        _V100,
    ),
    GpuSpec(
        "V100-SXM2-16GB",
        "NVIDIA V100 SXM2 16GB",
        ("V100-16GB",),
        15.7,
        None,
        None,
        125,
        None,
        16,
        300,
        (r"v100 sxm2 16gb",),
        _V100,
    ),
    GpuSpec(
        "V100-PCIe-32GB",
        "NVIDIA V100 PCIe 32GB",
        ("V100-PCIe",),
        14.0,
        None,
        None,
        112,
        None,
        32,
        250,
        (r"v100 pcie 32gb",),
        _V100,
    ),
    GpuSpec(
        "V100-PCIe-16GB",
        "NVIDIA V100 PCIe 16GB",
        (),
        14.0,
        None,
        None,
        112,
        None,
        16,
        250,
        (r"v100 pcie 16gb",),
        _V100,
    ),
    # _T4: 8.1 FP32; 65 FP16 mixed precision; no BF16 (Turing); 16 GB; 70 W.
    GpuSpec("T4", "NVIDIA T4 16GB", (), 8.1, None, None, 65, None, 16, 70, (r"t4",), _T4),
)

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8")
_DTYPE_ALIASES = {
    "fp32": "fp32",
    "float32": "fp32",
    "float": "fp32",
    "32": "fp32",
    "32-true": "fp32",
    "tf32": "tf32",
    "bf16": "bf16",
    "bfloat16": "bf16",
    "bf16-mixed": "bf16",
    "bf16-true": "bf16",
    "fp16": "fp16",
    "float16": "fp16",
    "half": "fp16",
    "16": "fp16",
    "16-mixed": "fp16",
    "16-true": "fp16",
    "fp8": "fp8",
    "float8": "fp8",
    "float8_e4m3fn": "fp8",
    "float8_e5m2": "fp8",
}


def _key(text: str) -> str:
    return re.sub(r"[^a-z0-9]", "", text.lower())


def normalise_device_name(device_name: str) -> str:
    """`NVIDIA A100-SXM4-40GB` -> `a100 sxm4 40gb`: lower case, separators as spaces, vendor words dropped."""
    words = re.sub(r"[-_/,()]+", " ", device_name.lower()).split()
    return " ".join(w for w in words if w not in ("nvidia", "tesla", "geforce"))


def detect_gpu(device_name: str) -> GpuSpec | None:
    """The table entry for a `torch.cuda.get_device_name()` string, or None when it is not in the table.

    Patterns must match the whole normalised name, so an unlisted variant (`H100 NVL` vs `H100`, `RTX
    4090 D`, `A100` without its memory size) gives None: MFU shows n/a rather than a wrong figure.
    """
    name = normalise_device_name(device_name)
    for spec in GPUS:
        if any(re.fullmatch(p, name) for p in spec.patterns):
            return spec
    return None


def gpu_by_name(name: str) -> GpuSpec:
    """The entry a user named with `--gpu` (name or alias, any case and punctuation); LlmctlError otherwise."""
    key = _key(name)
    for spec in GPUS:
        if key == _key(spec.name) or key in (_key(a) for a in spec.aliases):
            return spec
    spec = detect_gpu(name)
    if spec is not None:
        return spec
    names = [g.name for g in GPUS]
    close = difflib.get_close_matches(name.upper(), [n.upper() for n in names], n=1, cutoff=0.6)
    hint = f"did you mean {names[[n.upper() for n in names].index(close[0])]}? " if close else ""
    raise LlmctlError(
        f"unknown GPU '{name}'", f"{hint}known GPUs: {', '.join(names)} (llmctl budget --list-gpus)"
    )


def normalise_dtype(dtype: str) -> str:
    """`bfloat16`, `torch.bfloat16`, `bf16-mixed` -> `bf16`; LlmctlError for names it does not know."""
    key = str(dtype).lower().removeprefix("torch.")
    if key not in _DTYPE_ALIASES:
        raise LlmctlError(f"unknown dtype '{dtype}'", f"use one of {', '.join(DTYPES)}")
    return _DTYPE_ALIASES[key]


def resolve_dtype(spec: GpuSpec, dtype: str) -> str:
    """`auto` -> bf16 where the GPU has BF16 tensor cores, else fp16 (as training does); others normalised."""
    if dtype == "auto":
        return "bf16" if spec.bf16 else "fp16"
    return normalise_dtype(dtype)


def peak_flops(spec: GpuSpec, dtype: str) -> float | None:
    """Dense peak of one GPU in FLOP/s for `dtype` (fp32, tf32, bf16, fp16, fp8 or torch-style names).

    None when the GPU has no such path (BF16 on a T4 or V100, FP8 before Ada/Hopper): an MFU against
    some other figure would be wrong. `fp32` means plain FP32, which is what PyTorch runs unless
    TF32 matmuls are switched on.
    """
    tflops = getattr(spec, resolve_dtype(spec, dtype))
    return None if tflops is None else float(tflops) * TERA


def require_peak_flops(spec: GpuSpec, dtype: str) -> float:
    """peak_flops, or an LlmctlError naming the dtypes this GPU does have."""
    peak = peak_flops(spec, dtype)
    if peak is None:
        have = [d for d in DTYPES if getattr(spec, d) is not None]
        raise LlmctlError(
            f"{spec.name} has no {resolve_dtype(spec, dtype)} tensor cores",
            f"use --dtype {' or '.join(have)}",
        )
    return peak


def gpu_json(gpu: GpuSpec, count: int, dtype: str, peak_flops: float) -> dict[str, object]:
    """The GPU a plan is for, as planning commands' `--json` gives it."""
    return {
        "name": gpu.name,
        "count": count,
        "dtype": dtype,
        "peak_flops_per_gpu": peak_flops,
        "memory_gib": gpu.memory_gib,
    }
