"""Model, input, output, temp and user folders (nodes.md §3) and the one realpath containment helper."""
from __future__ import annotations

import os
from typing import Iterable

from engine.errors import PathEscape

INSTALL_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_EXTENSIONS = frozenset({".ckpt", ".pt", ".pt2", ".bin", ".pth", ".safetensors", ".pkl", ".sft"})
ALIASES = {"clip": "text_encoders", "unet": "diffusion_models"}

# (folder key, default directories relative to base ("models/..." or "output/..."), extensions)
# in registration order, which is the order of GET /models.
_DEFAULT_FOLDERS: tuple[tuple[str, tuple[str, ...], frozenset[str] | str | None], ...] = (
    ("checkpoints", ("models/checkpoints", "output/checkpoints"), MODEL_EXTENSIONS),
    ("configs", ("models/configs",), frozenset({".yaml"})),
    ("loras", ("models/loras", "output/loras"), MODEL_EXTENSIONS),
    ("vae", ("models/vae", "output/vae"), MODEL_EXTENSIONS),
    ("text_encoders", ("models/text_encoders", "models/clip", "output/clip"), MODEL_EXTENSIONS),
    ("diffusion_models", ("models/unet", "models/diffusion_models", "output/diffusion_models"),
     MODEL_EXTENSIONS),
    ("clip_vision", ("models/clip_vision",), MODEL_EXTENSIONS),
    ("style_models", ("models/style_models",), MODEL_EXTENSIONS),
    ("embeddings", ("models/embeddings",), MODEL_EXTENSIONS),
    ("diffusers", ("models/diffusers",), "diffusers"),
    ("vae_approx", ("models/vae_approx",), MODEL_EXTENSIONS),
    ("controlnet", ("models/controlnet", "models/t2i_adapter"), MODEL_EXTENSIONS),
    ("gligen", ("models/gligen",), MODEL_EXTENSIONS),
    ("upscale_models", ("models/upscale_models",), MODEL_EXTENSIONS),
    ("latent_upscale_models", ("models/latent_upscale_models",), MODEL_EXTENSIONS),
    ("custom_nodes", ("custom_nodes",), None),
    ("hypernetworks", ("models/hypernetworks",), MODEL_EXTENSIONS),
    ("photomaker", ("models/photomaker",), MODEL_EXTENSIONS),
    ("classifiers", ("models/classifiers",), "noext"),
    ("model_patches", ("models/model_patches",), MODEL_EXTENSIONS),
    ("audio_encoders", ("models/audio_encoders",), MODEL_EXTENSIONS),
)


def contained(root: str, relative: str, *, owner_links: bool = False) -> str:
    """Join `relative` under `root` and return its realpath, or raise PathEscape (security.md S6).

    The one resolver for every user-influenced path. `owner_links=True` (model folders only) keeps
    the lexical checks but lets symlinks the machine's owner placed under `root` point elsewhere
    (models linked from another disk, as ComfyUI allows); the joined path is returned unresolved.
    """
    if not isinstance(relative, str) or "\x00" in relative:
        raise PathEscape(f"invalid path {relative!r}")
    if relative.startswith(("/", "\\")) or (len(relative) >= 2 and relative[1] == ":"):
        raise PathEscape(f"absolute paths are not allowed: {relative!r}")
    if ".." in relative.replace("\\", "/").split("/"):
        raise PathEscape(f"'..' is not allowed in paths: {relative!r}")
    if owner_links:
        return os.path.join(os.path.abspath(root), relative)
    root_real = os.path.realpath(root)
    real = os.path.realpath(os.path.join(root_real, relative))
    if real != root_real and not real.startswith(root_real + os.sep):
        raise PathEscape(f"path {relative!r} leaves its folder")
    return real


class Paths:
    """Folder registry: model folder search lists, file listings (mtime-cached), name resolution."""

    def __init__(self, base_dir: str, *, input_dir: str | None = None, output_dir: str | None = None,
                 temp_dir: str | None = None, user_dir: str | None = None):
        self.base_dir = os.path.abspath(base_dir)
        self.models_dir = os.path.join(self.base_dir, "models")
        self.input_dir = os.path.abspath(input_dir or os.path.join(self.base_dir, "input"))
        self.output_dir = os.path.abspath(output_dir or os.path.join(self.base_dir, "output"))
        self.temp_dir = os.path.abspath(temp_dir or os.path.join(self.base_dir, "temp"))
        self.user_dir = os.path.abspath(user_dir or os.path.join(self.base_dir, "user"))
        self.folders: dict[str, tuple[list[str], frozenset[str] | str | None]] = {}
        for key, dirs, exts in _DEFAULT_FOLDERS:
            resolved = [os.path.join(self.output_dir, d[len("output/"):]) if d.startswith("output/")
                        else os.path.join(self.base_dir, d) for d in dirs]
            self.folders[key] = (resolved, exts)
        self._listing_cache: dict[str, tuple[dict[str, float], list[str]]] = {}

    @classmethod
    def from_config(cls, config) -> "Paths":
        """Build the folders from a RuntimeConfig, including extra_model_paths.yaml files."""
        base = config.base_directory or INSTALL_DIR
        temp = os.path.join(config.temp_directory, "temp") if config.temp_directory else None
        paths = cls(base, input_dir=config.input_directory, output_dir=config.output_directory,
                    temp_dir=temp, user_dir=config.user_directory)
        default_yaml = os.path.join(paths.base_dir, "extra_model_paths.yaml")
        for yaml_file in ([default_yaml] if os.path.isfile(default_yaml) else []) + list(
                config.extra_model_paths_config):
            paths.load_extra_model_paths(yaml_file)
        return paths

    # -- folders -------------------------------------------------------------------------------
    @staticmethod
    def canonical(folder: str) -> str:
        return ALIASES.get(folder, folder)

    def folder_paths(self, folder: str) -> list[str]:
        """Directories of a folder key in search order (KeyError for an unknown key)."""
        return list(self.folders[self.canonical(folder)][0])

    def folder_names(self) -> list[str]:
        return list(self.folders)

    def add_model_folder_path(self, folder: str, path: str, is_default: bool = False) -> None:
        """Add a search directory (front when `is_default`); an unknown key makes an unfiltered folder."""
        folder = self.canonical(folder)
        path = os.path.normpath(path)
        dirs, exts = self.folders.setdefault(folder, ([], None))
        if path in dirs:
            if is_default:
                dirs.remove(path)
                dirs.insert(0, path)
            return
        if is_default:
            dirs.insert(0, path)
        else:
            dirs.append(path)
        self._listing_cache.clear()

    def load_extra_model_paths(self, yaml_file: str) -> None:
        """Apply an extra_model_paths.yaml file (nodes.md §3.4)."""
        import yaml  # lazy: only needed when such a file exists

        with open(yaml_file, encoding="utf-8") as f:
            data = yaml.safe_load(f) or {}
        yaml_dir = os.path.dirname(os.path.abspath(yaml_file))
        for section in data.values():
            if not isinstance(section, dict):
                continue
            section = dict(section)
            base_path = section.pop("base_path", None)
            is_default = bool(section.pop("is_default", False))
            if base_path:
                base_path = os.path.expandvars(os.path.expanduser(str(base_path)))
                if not os.path.isabs(base_path):
                    base_path = os.path.join(yaml_dir, base_path)
            for key, value in section.items():
                if value is None:
                    continue
                for line in str(value).split("\n"):
                    if not line.strip():
                        continue
                    full = os.path.join(base_path, line) if base_path else (
                        line if os.path.isabs(line) else os.path.join(yaml_dir, line))
                    self.add_model_folder_path(key, os.path.normpath(full), is_default)

    # -- listing and resolving -----------------------------------------------------------------
    def list_files(self, folder: str) -> list[str]:
        """Sorted, de-duplicated relative names (with `/`) of the allowed files below a folder's dirs."""
        dirs, exts = self.folders[self.canonical(folder)]
        names: set[str] = set()
        for d in dirs:
            names.update(self._list_dir(d, exts))
        return sorted(names)

    def _list_dir(self, directory: str, exts) -> list[str]:
        cache_key = f"{directory}\x00{exts!r}"
        cached = self._listing_cache.get(cache_key)
        if cached is not None and all(_mtime(d) == m for d, m in cached[0].items()):
            return cached[1]
        mtimes: dict[str, float] = {directory: _mtime(directory)}
        found: list[str] = []
        if os.path.isdir(directory):
            seen_real: set[str] = set()   # symlinked folders are followed, but a link loop only once
            for root, subdirs, files in os.walk(directory, followlinks=True):
                real = os.path.realpath(root)
                if real in seen_real:
                    subdirs[:] = []
                    continue
                seen_real.add(real)
                subdirs[:] = sorted(s for s in subdirs if s != ".git")
                for s in subdirs:
                    mtimes[os.path.join(root, s)] = _mtime(os.path.join(root, s))
                rel_root = os.path.relpath(root, directory)
                if exts == "diffusers":
                    if "model_index.json" in files and rel_root != ".":
                        found.append(rel_root.replace(os.sep, "/"))
                    continue
                for name in files:
                    if _allowed(name, exts):
                        rel = name if rel_root == "." else os.path.join(rel_root, name)
                        found.append(rel.replace(os.sep, "/"))
        self._listing_cache[cache_key] = (mtimes, found)
        return found

    def full_path(self, folder: str, name: str) -> str:
        """Absolute path of a listed model name (first directory wins); FileNotFoundError otherwise."""
        folder = self.canonical(folder)
        if folder not in self.folders:
            raise FileNotFoundError(f"unknown model folder {folder!r}")
        if name not in self.list_files(folder):
            raise FileNotFoundError(f"{name!r} is not a file in the {folder!r} model folder "
                                    f"(searched: {', '.join(self.folders[folder][0])})")
        for d in self.folders[folder][0]:
            candidate = contained(d, name, owner_links=True)
            if os.path.exists(candidate):
                return candidate
        raise FileNotFoundError(f"{name!r} disappeared from the {folder!r} model folder")

    def contained(self, root: str, relative: str, *, owner_links: bool = False) -> str:
        """The realpath containment helper (see module-level `contained`)."""
        return contained(root, relative, owner_links=owner_links)

    def area_dir(self, area: str) -> str:
        """The directory of an `input` / `output` / `temp` area (ValueError otherwise)."""
        try:
            return {"input": self.input_dir, "output": self.output_dir, "temp": self.temp_dir}[area]
        except KeyError:
            raise ValueError(f"unknown folder type {area!r}") from None

    def custom_nodes_dirs(self) -> list[str]:
        return self.folder_paths("custom_nodes")


def _mtime(path: str) -> float:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return -1.0


def _allowed(name: str, exts) -> bool:
    if exts is None:
        return True
    if exts == "noext":
        return "." not in name.lstrip(".")
    return os.path.splitext(name)[1].lower() in exts


def ensure_dirs(paths: Paths, names: Iterable[str] = ("input", "output", "user")) -> None:
    """Create the writable areas at start-up."""
    for area in names:
        os.makedirs(getattr(paths, f"{area}_dir"), exist_ok=True)
