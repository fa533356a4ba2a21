"""A dataset made of part files: DIR/part-000000.parquet ... with DIR/_dataset.json listing them.

Tasks (generation batches) each write one canonical Parquet part atomically; `_dataset.json` is
written first as a plan (`complete: false`) and again, listing every part with its events, when
the last part is there (`complete: true`). Readers (`parquet_io.list_parquet`) take a folder with a
`_dataset.json` only when it is complete and its parts are exactly the listed ones, so a killed or
unfinished run is never read as a smaller dataset. (The leading `_` keeps pyarrow's own dataset
reader, `pq.read_table(DIR)`, off the JSON.)
"""
from __future__ import annotations

import json
from pathlib import Path

from engine.errors import InputError
from engine.files import atomic_path

DATASET = "_dataset.json"
FORMAT = "engine-parquet-parts"
FORMAT_VERSION = 1


def part_name(task: int) -> str:
    return f"part-{task:06d}.parquet"


def read_document(folder: Path) -> dict | None:
    """The folder's `_dataset.json` (checked for its shape), or None when it has none."""
    path = Path(folder) / DATASET
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        raise InputError(path, f"unreadable dataset document ({type(exc).__name__})") from None
    if not (isinstance(doc, dict) and doc.get("format") == FORMAT and isinstance(doc.get("tasks"), int)
            and isinstance(doc.get("parts"), list) and isinstance(doc.get("complete"), bool)):
        raise InputError(path, f"not a {FORMAT} document (corrupt, or written by something else)")
    return doc


def write_document(folder: Path, doc: dict) -> None:
    with atomic_path(Path(folder) / DATASET) as tmp:
        tmp.write_text(json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, **doc},
                                  indent=1, sort_keys=True) + "\n")


def check_listing(folder: Path, found: list[Path]) -> None:
    """InputError unless `found` (the .parquet files in `folder`) are the parts of its complete
    dataset document; no-op for a folder without one."""
    doc = read_document(folder)
    if doc is None:
        return
    if not doc["complete"]:
        done = sum(1 for p in found if p.name.startswith("part-"))
        raise InputError(folder, f"unfinished dataset: {done} of {doc['tasks']} parts are there "
                                 f"(rerun the same command to finish it)")
    listed = {part.get("name") for part in doc["parts"] if isinstance(part, dict)}
    names = {p.name for p in found}
    if listed != names:
        missing, extra = sorted(listed - names), sorted(names - listed)
        problem = (f"part {missing[0]} listed in {DATASET} is missing" if missing
                   else f"{extra[0]} is not a part listed in {DATASET}")
        raise InputError(folder, problem)
