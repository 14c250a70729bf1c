"""Model runtime benchmark: prints JSON lines about loading and running a full-size SD1.5 checkpoint.

It writes a random SD1.5 fp16 checkpoint (2.1 GB, key/shape list tests/fixtures/keys/sd15.tsv) into a
temporary directory, then measures: load time and peak RSS growth during load against the in-memory
size of the loaded weights; UNet forward time at 32×32 and 64×64 latents (batch 2) computing in fp32
and bf16, with achieved GFLOP/s next to the matmul rate measured right after each forward (the
machine may be shared, so the load average is printed too); VAE decode at 512×512.

    .venv/bin/python bench/runtime.py [--keep DIR] [--repeat N]
"""
from __future__ import annotations

import argparse
import json
import os
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
KEYS = ROOT / "tests" / "fixtures" / "keys" / "sd15.tsv"
ST_DTYPES = {"float16": ("F16", torch.float16), "float32": ("F32", torch.float32), "int64": ("I64", torch.int64)}


def emit(**record) -> None:
    print(json.dumps(record), flush=True)


def write_random_checkpoint(path: Path, seed: int = 0) -> int:
    """Stream a safetensors file with random values for every key of sd15.tsv; returns its size."""
    entries, offset = [], 0
    for line in KEYS.read_text().splitlines():
        key, shape, dtype = line.split("\t")
        dims = [int(s) for s in shape.strip("[]").split(",") if s.strip()]
        code, torch_dtype = ST_DTYPES[dtype]
        nbytes = torch.Size(dims).numel() * torch.empty((), dtype=torch_dtype).element_size()
        entries.append((key, dims, code, torch_dtype, offset, offset + nbytes))
        offset += nbytes
    header = json.dumps({k: {"dtype": c, "shape": d, "data_offsets": [a, b]} for k, d, c, _, a, b in entries},
                        separators=(",", ":")).encode()
    header += b" " * (-len(header) % 8)
    gen = torch.Generator().manual_seed(seed)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header)
        for key, dims, _, torch_dtype, _, _ in entries:
            if torch_dtype == torch.int64:
                t = torch.arange(torch.Size(dims).numel(), dtype=torch.int64).reshape(dims)
            else:
                t = (torch.randn(dims, generator=gen) * 0.02).to(torch_dtype)
                if key.endswith(("norm.weight", "norm1.weight", "norm2.weight", "norm3.weight", "norm_out.weight",
                                 "in_layers.0.weight", "out_layers.0.weight", "out.0.weight")):
                    t += 1  # norm gains around 1 keep activations in range
            f.write(t.contiguous().numpy().tobytes())
    return path.stat().st_size


def rss_mb() -> tuple[float, float]:
    """(current RSS, peak RSS) of this process in MiB."""
    info = {}
    with open("/proc/self/status") as f:
        for line in f:
            name, _, value = line.partition(":")
            info[name] = value
    return int(info["VmRSS"].split()[0]) / 1024, int(info["VmHWM"].split()[0]) / 1024


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeat: int = 5) -> float:
    a = torch.randn(n, n, generator=torch.Generator().manual_seed(0)).to(dtype)
    a @ a
    start = time.perf_counter()
    for _ in range(repeat):
        a @ a
    return 2 * n ** 3 * repeat / (time.perf_counter() - start) / 1e9


def unet_flops(config: dict, size: int) -> float:
    """FLOPs of one batch-2 UNet forward, counted on the meta device."""
    from torch.utils.flop_counter import FlopCounterMode

    from diffusion.models.unet import UNetModel

    with torch.device("meta"):
        unet = UNetModel(**config)
        x, t, ctx = torch.empty(2, 4, size, size), torch.empty(2), torch.empty(2, 77, config["context_dim"])
    with FlopCounterMode(display=False) as counter:
        unet(x, t, ctx)
    return counter.get_total_flops()


def vae_decode_flops(vae: torch.nn.Module, shape: torch.Size) -> float:
    """FLOPs of one VAE decode of a latent of `shape`, counted on a meta-device copy of the architecture."""
    from torch.utils.flop_counter import FlopCounterMode

    from diffusion.detect import vae_config
    from diffusion.models.vae import AutoencoderKL

    cfg = vae_config({k: tuple(v.shape) for k, v in vae.state_dict().items()})
    with torch.device("meta"):
        model, z = AutoencoderKL(**cfg), torch.empty(shape)
    with FlopCounterMode(display=False) as counter:
        model.decode(z)
    return counter.get_total_flops()


def timed(fn, repeat: int) -> float:
    """Best wall time of `repeat` calls after one warm-up call (first calls fault in mmap'd pages)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="write/reuse the checkpoint in this directory")
    parser.add_argument("--repeat", type=int, default=1, help="timed runs per measurement after a warm-up (best is reported)")
    parser.add_argument("--write-only", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write_only:
        write_random_checkpoint(args.write_only)
        return

    torch.set_grad_enabled(False)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.keep or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / "random_sd15_fp16.safetensors"
        if not path.exists():
            start = time.perf_counter()  # in a child process, so its memory does not count below
            subprocess.run([sys.executable, __file__, "--write-only", str(path)], check=True)
            emit(bench="write_checkpoint", seconds=round(time.perf_counter() - start, 2),
                 bytes=path.stat().st_size)

        from diffusion import loading
        from diffusion.devices import RuntimeOptions, cpu_has_native_bf16

        start = time.perf_counter()
        import diffusion.models.text_encoders  # noqa: F401  (transformers' import is not load time)

        emit(bench="import_text_encoders", seconds=round(time.perf_counter() - start, 2))
        rss_before, _ = rss_mb()
        start = time.perf_counter()
        model, clip, vae = loading.load_checkpoint(path, config=RuntimeOptions())
        load_s = time.perf_counter() - start
        _, peak = rss_mb()
        weights = sum(p.numel() * p.element_size() for m in (model.unet, vae.model) for p in m.parameters())
        if clip is not None:
            weights += sum(p.numel() * p.element_size() for e in clip.encoders.values() for p in e.parameters())
        emit(bench="load_checkpoint", seconds=round(load_s, 2), file_bytes=path.stat().st_size,
             weights_bytes=weights, peak_rss_growth_bytes=int((peak - rss_before) * 2 ** 20),
             peak_rss_growth_ratio=round((peak - rss_before) * 2 ** 20 / weights, 3), clip_loaded=clip is not None,
             unet_storage_dtype=str(next(model.unet.parameters()).dtype))

        rates = {str(d).removeprefix("torch."): round(matmul_gflops(d), 1) for d in (torch.float32, torch.bfloat16)}
        emit(bench="matmul_2048", gflops=rates, threads=torch.get_num_threads(), cpus=os.cpu_count(),
             cpu_native_bf16=cpu_has_native_bf16(),
             default_unet_compute_dtype=str(model.compute_dtype))

        gen = torch.Generator().manual_seed(1)
        for size in (32, 64):
            flops = unet_flops(model.config, size)
            x = torch.randn(2, 4, size, size, generator=gen)
            ctx = torch.randn(2, 77, 768, generator=gen)
            t = torch.tensor([999.0, 500.0])
            for dtype in (torch.float32, torch.bfloat16):
                with model.active("cpu", dtype) as unet:  # weights cast once here, not timed
                    seconds = timed(lambda: unet(x, t, ctx), args.repeat)
                    rate = matmul_gflops(dtype)  # right after, so a busy machine affects both alike
                name = str(dtype).removeprefix("torch.")
                emit(bench="unet_forward", latent=f"{size}x{size}", batch=2, compute_dtype=name,
                     seconds=round(seconds, 3), gflop=round(flops / 1e9, 1),
                     achieved_gflops=round(flops / seconds / 1e9, 1), matmul_gflops=round(rate, 1),
                     load_average=round(os.getloadavg()[0], 1))

        z = torch.randn(1, 4, 64, 64, generator=gen)
        flops = vae_decode_flops(vae.model, z.shape)
        seconds = timed(lambda: vae.decode(z), args.repeat)
        emit(bench="vae_decode", image="512x512", batch=1, compute_dtype=str(vae.dtype).removeprefix("torch."),
             seconds=round(seconds, 2), gflop=round(flops / 1e9, 1), achieved_gflops=round(flops / seconds / 1e9, 1),
             load_average=round(os.getloadavg()[0], 1))


if __name__ == "__main__":
    main()
