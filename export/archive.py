"""TorchServe model archives (`generate.mar`, `score.mar`) built from a model directory.

Each archive holds `model.json`, every ONNX file of the model directory and a handler module,
so the handler can call `ebgen.load_model(<unpacked archive>)`. The default handler modules
are `ebgen.serve`'s one-class entry files `ts_generate.py` and `ts_score.py` (`HANDLER_FILES`).
The archive's model name is its kind ("generate" or "score"); TorchServe reports it to the
handler in `context.manifest["model"]["modelName"]`. Archives are built with
torch-model-archiver's Python API in a private temporary folder (the archiver's own default,
`$TMPDIR/<model name>`, would clash between concurrent exports).
"""
from __future__ import annotations

import importlib.util
import json
import tempfile
import threading
import zipfile
from pathlib import Path

from ebgen import __version__
from ebgen.errors import EbgenError
from ebgen.model_format import model_file, read_model_info
from ebgen.names import ARCHIVE_KINDS, CALIBRATION_FILE, HANDLER_MODULES, MODEL_FILE

MANIFEST = "MAR-INF/MANIFEST.json"


def _serve_dir() -> Path:
    """The folder of the `ebgen.serve` package, found without importing it."""
    spec = importlib.util.find_spec("ebgen.serve")
    if spec is not None and spec.submodule_search_locations:
        return Path(list(spec.submodule_search_locations)[0])
    return Path(__file__).resolve().parent.parent / "serve"


#: The default TorchServe handler module of each archive kind, provided by `ebgen.serve`.
HANDLER_FILES = {kind: _serve_dir() / HANDLER_MODULES[kind] for kind in ARCHIVE_KINDS}

_lock = threading.Lock()


def archive_name(kind: str) -> str:
    """The file name of the archive of `kind`: "generate.mar" or "score.mar"."""
    if kind not in ARCHIVE_KINDS:
        raise EbgenError(f"unknown archive kind {kind!r}: expected one of "
                         f"{', '.join(ARCHIVE_KINDS)}")
    return f"{kind}.mar"


def archive_files(model_dir: str | Path) -> list[Path]:
    """The files an archive carries: model.json, each ONNX file model.json lists, and the
    calibration when the model has one."""
    model_dir = Path(model_dir)
    info = read_model_info(model_dir)
    calibration = [model_dir / CALIBRATION_FILE] if (model_dir / CALIBRATION_FILE).is_file() \
        else []
    return [model_dir / MODEL_FILE] + [model_file(model_dir, entry)
                                        for entry in info.get("onnx", {}).values()
                                        if isinstance(entry, dict) and "file" in entry] \
        + calibration


def build_archive(model_dir: str | Path, kind: str, handler: str | Path | None = None,
                  out_dir: str | Path | None = None, *, entry: str | None = None) -> Path:
    """Build `<kind>.mar` in `out_dir` (default: `model_dir`) and return its path.

    `handler` is a Python file (a TorchServe handler module with one handler class or a
    `handle(data, context)` function; default `HANDLER_FILES[kind]`); `entry` names another
    entry function in it. An
    existing archive of the same name is replaced. Raises `EbgenError` for a missing handler
    or model file, or when torch-model-archiver fails.

    Example:
        >>> build_archive("models/tiny", "score")  # doctest: +SKIP
        PosixPath('models/tiny/score.mar')
    """
    try:
        from model_archiver.model_archiver_config import ModelArchiverConfig
        from model_archiver.model_packaging import package_model
        from model_archiver.model_packaging_utils import ModelExportUtils
    except ImportError:
        raise EbgenError("building TorchServe archives needs torch-model-archiver: "
                         "pip install 'ebgen[torchserve]', or export with --no-archive") from None
    name = archive_name(kind)
    handler = Path(handler) if handler is not None else HANDLER_FILES[kind]
    if handler.suffix != ".py" or not handler.is_file():
        raise EbgenError(f"TorchServe handler {handler} is not a Python file")
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else model_dir
    out_dir.mkdir(parents=True, exist_ok=True)
    files = archive_files(model_dir)
    handler_arg = str(handler.resolve())
    if entry:
        handler_arg = f"{handler_arg[:-3]}:{entry}"
    config = ModelArchiverConfig(
        model_name=kind, handler=handler_arg, version=__version__,
        extra_files=",".join(str(p.resolve()) for p in files),
        export_path=str(out_dir.resolve()), archive_format="default", force=True)
    with _lock, tempfile.TemporaryDirectory(prefix="ebgen-mar-") as scratch:
        saved = tempfile.tempdir
        tempfile.tempdir = scratch  # the archiver stages files in gettempdir()/<model name>
        try:
            package_model(config, manifest=ModelExportUtils.generate_manifest_json(config))
        except Exception as e:
            text = str(e).strip().splitlines()
            raise EbgenError(f"torch-model-archiver failed on {name}: "
                             f"{text[0] if text else type(e).__name__}") from e
        finally:
            tempfile.tempdir = saved
    path = out_dir / name
    check_archive(path, [p.name for p in files] + [handler.name])
    return path


def check_archive(path: str | Path, expected: list[str] | None = None) -> dict:
    """The MANIFEST.json of the .mar at `path`, after checking it is a zip holding `expected`."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            names = set(z.namelist())
            manifest = json.loads(z.read(MANIFEST)) if MANIFEST in names else None
    except (OSError, zipfile.BadZipFile, json.JSONDecodeError) as e:
        raise EbgenError(f"{path} is not a valid model archive: {e}") from None
    if manifest is None:
        raise EbgenError(f"{path} is not a valid model archive: no {MANIFEST}")
    missing = sorted(set(expected or ()) - names)
    if missing:
        raise EbgenError(f"{path} lacks {', '.join(missing)}")
    return manifest
