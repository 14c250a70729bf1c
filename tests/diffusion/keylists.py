"""Read the reference checkpoint key lists copied into tests/fixtures/keys."""
from pathlib import Path

KEYS_DIR = Path(__file__).resolve().parent.parent / "fixtures" / "keys"


def read_keys(name: str) -> dict[str, tuple[list[int], str]]:
    """`key -> (shape, dtype name)` of one reference list."""
    out = {}
    for line in (KEYS_DIR / f"{name}.tsv").read_text().splitlines():
        key, shape, dtype = line.split("\t")
        out[key] = ([int(s) for s in shape.strip("[]").split(",") if s.strip()], dtype)
    return out


def section(keys: dict[str, tuple[list[int], str]], prefix: str) -> dict[str, list[int]]:
    """Shapes of the keys under `prefix`, with the prefix removed."""
    return {k[len(prefix):]: shape for k, (shape, _) in keys.items() if k.startswith(prefix)}
