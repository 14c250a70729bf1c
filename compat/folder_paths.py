"""`folder_paths` for packs: ComfyUI's functions over Kiln's `engine.paths.Paths`."""
from __future__ import annotations

import mimetypes
import os
import re
from collections.abc import MutableMapping

from compat.state import STATE
from engine.paths import MODEL_EXTENSIONS

supported_pt_extensions = set(MODEL_EXTENSIONS)


class _FolderTable(MutableMapping):
    """`folder_names_and_paths`: folder → (directories, extensions), live over Kiln's folders."""

    def __getitem__(self, key):
        dirs, exts = STATE.paths.folders[STATE.paths.canonical(key)]
        return dirs, set(exts) if isinstance(exts, frozenset) else set()

    def __setitem__(self, key, value):
        dirs, exts = value
        STATE.paths.folders[STATE.paths.canonical(key)] = (list(dirs), frozenset(exts) if exts else None)
        STATE.paths._listing_cache.clear()

    def __delitem__(self, key):
        del STATE.paths.folders[STATE.paths.canonical(key)]

    def __iter__(self):
        return iter(list(STATE.paths.folders))

    def __len__(self):
        return len(STATE.paths.folders)


folder_names_and_paths = _FolderTable()


def __getattr__(name: str):
    """Directory attributes read live from the running configuration."""
    live = {"models_dir": lambda p: p.models_dir, "base_path": lambda p: p.base_dir,
            "output_directory": lambda p: p.output_dir, "input_directory": lambda p: p.input_dir,
            "temp_directory": lambda p: p.temp_dir, "user_directory": lambda p: p.user_dir}
    if name in live:
        return live[name](STATE.paths)
    raise AttributeError(name)


def get_folder_paths(folder_name: str) -> list[str]:
    return STATE.paths.folder_paths(folder_name)


def get_filename_list(folder_name: str) -> list[str]:
    return STATE.paths.list_files(folder_name)


def get_full_path(folder_name: str, filename: str) -> str | None:
    """The file's path, or None when it is not in the folder's listing."""
    try:
        return STATE.paths.full_path(folder_name, filename)
    except (FileNotFoundError, KeyError):
        return None


def get_full_path_or_raise(folder_name: str, filename: str) -> str:
    try:
        return STATE.paths.full_path(folder_name, filename)
    except KeyError:
        raise FileNotFoundError(f"Model in folder '{folder_name}' with filename '{filename}' not found.") from None


def add_model_folder_path(folder_name: str, full_folder_path: str, is_default: bool = False) -> None:
    STATE.paths.add_model_folder_path(folder_name, full_folder_path, is_default)


def get_input_directory() -> str:
    return STATE.paths.input_dir


def get_output_directory() -> str:
    return STATE.paths.output_dir


def get_temp_directory() -> str:
    return STATE.paths.temp_dir


def get_user_directory() -> str:
    return STATE.paths.user_dir


def get_directory_by_type(type_name: str) -> str | None:
    try:
        return STATE.paths.area_dir(type_name)
    except ValueError:
        return None


def annotated_filepath(name: str) -> tuple[str, str | None]:
    """Split `"x.png [output]"` into the name and the area directory (None without annotation)."""
    for area in ("output", "input", "temp"):
        suffix = f" [{area}]"
        if name.endswith(suffix):
            return name[: -len(suffix)], STATE.paths.area_dir(area)
    return name, None


def get_annotated_filepath(name: str, default_dir: str | None = None) -> str:
    """The contained path of an annotated name (raises engine.errors.PathEscape when it escapes)."""
    name, base = annotated_filepath(name)
    if base is None:
        base = default_dir if default_dir is not None else STATE.paths.input_dir
    return STATE.paths.contained(base, name)


def exists_annotated_filepath(name: str) -> bool:
    try:
        return os.path.exists(get_annotated_filepath(name))
    except ValueError:
        return False


def get_save_image_path(filename_prefix: str, output_dir: str, image_width: int = 0, image_height: int = 0):
    """(full_output_folder, filename, counter, subfolder, filename_prefix) for numbered saves."""
    import time

    t = time.localtime()
    for token, value in (("%width%", str(image_width)), ("%height%", str(image_height)),
                         ("%year%", str(t.tm_year)), ("%month%", f"{t.tm_mon:02d}"), ("%day%", f"{t.tm_mday:02d}"),
                         ("%hour%", f"{t.tm_hour:02d}"), ("%minute%", f"{t.tm_min:02d}"),
                         ("%second%", f"{t.tm_sec:02d}")):
        filename_prefix = filename_prefix.replace(token, value)
    subfolder = os.path.dirname(os.path.normpath(filename_prefix))
    filename = os.path.basename(os.path.normpath(filename_prefix))
    full_output_folder = STATE.paths.contained(output_dir, os.path.join(subfolder, filename))
    full_output_folder = os.path.dirname(full_output_folder)
    pattern = re.compile(re.escape(filename) + r"_(\d+)_?")
    counter = 1
    if os.path.isdir(full_output_folder):
        numbers = [int(m.group(1)) for f in os.listdir(full_output_folder) if (m := pattern.match(f))]
        counter = max(numbers, default=0) + 1
    return full_output_folder, filename, counter, subfolder, filename_prefix


def filter_files_content_types(files: list[str], content_types: list[str]) -> list[str]:
    """Keep files whose guessed MIME major type is in `content_types` ("image", "video", "audio", "model")."""
    out = []
    for f in files:
        mime = mimetypes.guess_type(f, strict=False)[0] or ""
        kind = mime.split("/")[0]
        if os.path.splitext(f)[1].lower() in MODEL_EXTENSIONS:
            kind = "model"
        if kind in content_types:
            out.append(f)
    return out
