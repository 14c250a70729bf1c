"""RuntimeConfig: the command-line flags ComfyUI users already type, as one frozen value."""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field


@dataclass(frozen=True)
class RuntimeConfig:
    """Settings shared by the server, the executor and the nodes (from main.py's flags)."""

    listen: str = "127.0.0.1"
    port: int = 8188
    cpu: bool = False
    force_fp32: bool = False
    fp32_text_enc: bool = False
    base_directory: str | None = None
    output_directory: str | None = None
    input_directory: str | None = None
    user_directory: str | None = None
    temp_directory: str | None = None
    extra_model_paths_config: tuple[str, ...] = ()
    disable_all_custom_nodes: bool = False
    whitelist_custom_nodes: tuple[str, ...] = ()
    cache: tuple = ("classic",)          # ("classic",) | ("lru", n) | ("ram", gb) | ("none",)
    enable_cors_header: str | None = None  # None = off; "*" = bare flag
    allowed_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    token: str | None = None
    token_file: str | None = None
    generate_token: bool = False
    allow_unauthenticated_remote: bool = False
    max_upload_size: float = 100.0        # MB
    max_history: int = 10000
    preview_method: str = "none"
    preview_size: int = 512
    disable_metadata: bool = False
    front_end_root: str | None = None
    default_hashing_function: str = "sha256"
    extra: dict = field(default_factory=dict)

    @property
    def cache_policy(self):
        """The argument of engine.cache.make_cache for this configuration."""
        kind = self.cache[0]
        return kind if kind in ("classic", "none") else (kind, self.cache[1])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Register every server/runtime flag on a parser (shared by `serve` and `run`)."""
    a = parser.add_argument
    a("--listen", nargs="?", const="0.0.0.0,::", default="127.0.0.1",
      help="address(es) to bind; bare flag = all interfaces (needs --token)")
    a("--port", type=int, default=8188)
    a("--cpu", action="store_true", help="run everything on the CPU")
    a("--force-fp32", action="store_true", help="compute in float32")
    a("--fp32-text-enc", action="store_true", help="keep text-encoder weights in float32")
    a("--base-directory", default=None)
    a("--output-directory", default=None)
    a("--input-directory", default=None)
    a("--user-directory", default=None)
    a("--temp-directory", default=None)
    a("--extra-model-paths-config", action="append", default=[], metavar="FILE")
    a("--disable-all-custom-nodes", action="store_true")
    a("--whitelist-custom-nodes", nargs="+", default=[], metavar="NAME")
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument("--cache-classic", action="store_true", help="keep the latest prompt's outputs")
    cache.add_argument("--cache-lru", type=int, default=0, metavar="N", help="keep outputs of N prompts")
    cache.add_argument("--cache-ram", type=float, nargs="?", const=4.0, default=None, metavar="GB",
                       help="keep everything; evict when free RAM drops below GB")
    cache.add_argument("--cache-none", action="store_true", help="cache nothing")
    a("--enable-cors-header", nargs="?", const="*", default=None, metavar="ORIGIN")
    a("--allowed-origin", action="append", default=[], metavar="URL")
    a("--allowed-host", action="append", default=[], metavar="NAME")
    a("--token", default=None)
    a("--token-file", default=None)
    a("--generate-token", action="store_true")
    a("--allow-unauthenticated-remote", action="store_true")
    a("--max-upload-size", type=float, default=100.0, metavar="MB")
    a("--max-history", type=int, default=10000)
    a("--preview-method", choices=["none", "auto", "latent2rgb", "taesd"], default="none")
    a("--preview-size", type=int, default=512)
    a("--disable-metadata", action="store_true")
    a("--front-end-root", default=None)
    a("--default-hashing-function", choices=["md5", "sha1", "sha256", "sha512"], default="sha256")


def config_from_args(ns: argparse.Namespace) -> RuntimeConfig:
    """Turn parsed flags into a RuntimeConfig (missing attributes take the defaults)."""
    g = lambda name, default=None: getattr(ns, name, default)  # noqa: E731
    if g("cache_none"):
        cache: tuple = ("none",)
    elif g("cache_lru"):
        cache = ("lru", int(g("cache_lru")))
    elif g("cache_ram") is not None:
        cache = ("ram", float(g("cache_ram")))
    else:
        cache = ("classic",)
    return RuntimeConfig(
        listen=g("listen", "127.0.0.1"), port=g("port", 8188), cpu=bool(g("cpu")),
        force_fp32=bool(g("force_fp32")), fp32_text_enc=bool(g("fp32_text_enc")),
        base_directory=g("base_directory"), output_directory=g("output_directory"),
        input_directory=g("input_directory"), user_directory=g("user_directory"),
        temp_directory=g("temp_directory"),
        extra_model_paths_config=tuple(g("extra_model_paths_config", []) or ()),
        disable_all_custom_nodes=bool(g("disable_all_custom_nodes")),
        whitelist_custom_nodes=tuple(g("whitelist_custom_nodes", []) or ()), cache=cache,
        enable_cors_header=g("enable_cors_header"), allowed_origins=tuple(g("allowed_origin", []) or ()),
        allowed_hosts=tuple(g("allowed_host", []) or ()), token=g("token"), token_file=g("token_file"),
        generate_token=bool(g("generate_token")),
        allow_unauthenticated_remote=bool(g("allow_unauthenticated_remote")),
        max_upload_size=g("max_upload_size", 100.0), max_history=g("max_history", 10000),
        preview_method=g("preview_method", "none"), preview_size=g("preview_size", 512),
        disable_metadata=bool(g("disable_metadata")), front_end_root=g("front_end_root"),
        default_hashing_function=g("default_hashing_function", "sha256"))
