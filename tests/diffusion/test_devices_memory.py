"""Dtype policy per device and flags; what memory stats and free_all report and do."""
import torch

from diffusion import devices, memory
from diffusion.devices import RuntimeOptions
from tests.diffusion.tiny_models import tiny_unet


def test_force_fp32_makes_every_model_store_and_compute_in_float32():
    forced = RuntimeOptions(force_fp32=True)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert devices.unet_dtype(cpu, torch.float16, forced) == torch.float32
    assert devices.unet_dtype(cuda, torch.float16, forced) == torch.float32
    assert devices.vae_dtype(cuda, torch.float16, forced) == torch.float32
    assert devices.storage_dtype_for(torch.bfloat16, forced) == torch.float32
    assert devices.storage_dtype_for(torch.int64, forced) == torch.int64


def test_without_flags_storage_is_kept_and_the_cpu_vae_computes_in_float32():
    assert devices.storage_dtype_for(torch.float16) == torch.float16
    assert devices.vae_dtype(torch.device("cpu"), torch.float16) == torch.float32
    cpu_choice = devices.unet_dtype(torch.device("cpu"), torch.float16)
    assert cpu_choice == (torch.bfloat16 if devices.cpu_has_native_bf16() else torch.float32)
    assert devices.unet_dtype(torch.device("cuda"), torch.float16) == torch.float16


def test_cpu_flag_keeps_models_on_the_cpu():
    assert devices.compute_device(RuntimeOptions(cpu=True)) == torch.device("cpu")


def test_memory_stats_report_ram_and_the_models_in_use():
    unet = tiny_unet("sd1")
    memory.load_to(unet, torch.device("cpu"))
    stats = memory.stats()
    assert stats["ram_total"] > stats["ram_free"] > 0
    assert stats["devices"] and {"name", "type", "vram_total", "vram_free"} <= set(stats["devices"][0])
    assert ("UNetModel", torch.device("cpu"), memory.module_bytes(unet)) in memory.loaded_models()
    memory.free_all()
    assert memory.loaded_models() == []
