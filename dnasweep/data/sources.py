"""The registry of data sources, the one list of what `data.source` may name per task: each
`Source` says how to load it ("module:function", imported only then, so heavy or optional imports
stay inside loaders) and what `check_data` must know without reading it. Torch-free, cheap to import.
"""

from __future__ import annotations

from dataclasses import dataclass

TASKS = ("lm", "vision")
PATH_KINDS = ("file", "dir", "any")
# Suffixes read from a text folder: anything else (e.g. __pycache__/*.pyc, images) is skipped.
TEXT_SUFFIXES = (".txt", ".text", ".md", ".rst", ".py", ".json", ".jsonl", ".csv", ".tsv",
                 ".html", ".xml", ".tex", ".c", ".h")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


@dataclass(frozen=True)
class Source:
    """One data source of one task."""

    task: str  # "lm" | "vision": the model task it feeds
    name: str  # the value of data.source that selects it
    loader: str  # "module:function" called with the DataConfig; imported only when loaded
    doc: str  # one line: what it reads (also the fix of its data.path problems)
    byte_level: bool = False  # corpus is raw UTF-8 bytes: vocabulary of the 256 byte values
    needs_path: bool = False  # data.path must name an existing file or folder holding data
    path_kind: str = "any"  # "file" | "dir" | "any": what data.path may be
    suffixes: tuple[str, ...] = ()  # a "file" path's allowed suffixes; the files read from a folder
    files: str = "files"  # what those files are called in messages ("text files", "images")
    requires: tuple[str, ...] = ()  # optional modules its loader imports (checked before loading)
    # The optional keys it reads among data.path, data.name, data.image_size; set others are refused
    # as ignored. None (a source registered without saying): not checked.
    reads: tuple[str, ...] | None = None
    image_shape: tuple[int, int, int] | None = None  # (C, H, W) of every image it loads, when fixed
    n_classes: int | None = None  # classes it loads, when fixed


SOURCES: dict[tuple[str, str], Source] = {}  # (task, name) -> Source


def register_source(task: str, name: str, loader: str, doc: str, **props) -> Source:
    """Add source `name` of `task` (props: the other `Source` fields); ValueError if taken or malformed."""
    src = Source(task, name, loader, doc, **props)
    if task not in TASKS or src.path_kind not in PATH_KINDS or ":" not in loader:
        raise ValueError(f"bad data source {src}: want task in {TASKS}, path_kind in {PATH_KINDS}, loader 'mod:func'")
    if (task, name) in SOURCES:
        raise ValueError(f"data source {name!r} of task {task!r} is already registered")
    SOURCES[task, name] = src
    return src


def source_names(task: str) -> tuple[str, ...]:
    """The registered source names of `task`, in registration order."""
    return tuple(name for t, name in SOURCES if t == task)


def get_source(task: str, name: str) -> Source | None:
    """Source `name` of `task`, or None when none is registered."""
    return SOURCES.get((task, name))


def byte_level(task: str, name: str) -> bool:
    """True when source `name` of `task` is registered and byte-level."""
    return (src := get_source(task, name)) is not None and src.byte_level


register_source("lm", "pystdlib", "dnasweep.data.pystdlib:load_pystdlib",
                "the installed Python standard library's .py files (cached)", byte_level=True, reads=())
register_source("lm", "text", "dnasweep.data.lm:load_text", "a UTF-8 text file, or a folder of text files",
                byte_level=True, needs_path=True, suffixes=TEXT_SUFFIXES, files="text files", reads=("path",))
register_source("lm", "tokens", "dnasweep.data.lm:load_tokens", "token ids in a raw .bin file (data.dtype) or "
                "an .npy file", needs_path=True, path_kind="file", suffixes=(".bin", ".npy"), reads=("path",))
register_source("lm", "hf", "dnasweep.data.lm:load_hf_text", "the text field of a Hugging Face dataset (data.name)",
                byte_level=True, requires=("datasets",), reads=("name",))
register_source("vision", "digits", "dnasweep.data.vision:load_digits", "scikit-learn's 8x8 digits",
                image_shape=(1, 8, 8), n_classes=10, reads=())
register_source("vision", "npz", "dnasweep.data.vision:load_npz", "an .npz file, np.savez(path, images=..., "
                "labels=...)", needs_path=True, path_kind="file", suffixes=(".npz",), reads=("path",))
register_source("vision", "folder", "dnasweep.data.images:load_folder", "a folder of images laid out as "
                "PATH/<class name>/<image file>", needs_path=True, path_kind="dir", suffixes=IMAGE_SUFFIXES,
                files="images", requires=("PIL",), reads=("path", "image_size"))
register_source("vision", "hf", "dnasweep.data.images:load_hf_images", "the image and label fields of a "
                "Hugging Face dataset (data.name)", requires=("datasets", "PIL"), reads=("name", "image_size"))
