"""`ebgen score`: wraps `ebgen.serve.service` scoring (the servers' own core) over files."""
from __future__ import annotations

import glob
import json
from pathlib import Path

import click

from .options import device_option, json_option

SUFFIXES = (".png", ".jpg", ".jpeg", ".npy", ".json")
#: Files decoded before one onnxruntime call.
CHUNK = 256


def expand_inputs(inputs: tuple[str, ...]) -> list[Path]:
    """Files named, matched by a glob, or found (recursively) in a folder; in order, once each."""
    found: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            found += sorted(p for p in path.rglob("*")
                            if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif any(c in item for c in "*?["):
            found += [Path(p) for p in sorted(glob.glob(item, recursive=True))
                      if Path(p).is_file()]
        else:
            found.append(path)
    return list(dict.fromkeys(found))


@click.command("score")
@click.argument("model", metavar="MODEL")
@click.argument("inputs", nargs=-1, required=True, metavar="FILES_OR_DIRS...")
@device_option()
@json_option()
@click.option("--quiet", is_flag=True, help="No progress bar.")
def score_command(model, inputs, device, as_json, quiet) -> None:
    """Energy, log-density and percentile of images or arrays under a model.

    Inputs are PNG/JPEG files, .npy arrays (one sample or a batch; uint8 pixels or floats in
    [-1, 1]; points: N×D numbers), JSON score requests, folders (searched recursively) or
    globs. One line per sample: the percentile is among the training data's energies (higher
    = less typical); a calibrated model (`ebgen calibrate`) adds the tail probability and
    the anomaly decision. An unreadable input stops with exit code 2, naming the file.

    \b
    Examples:
      ebgen score models/tiny digit.png
      ebgen score models/mnist tests/images/ 'more/*.png' --json
    """
    from ebgen import load_model
    from ebgen.serve.service import run_energy_batch, score_result

    m = load_model(model, device)
    rows: list[dict] = []
    for chunk in _chunks(read_score_inputs(m, inputs, quiet), CHUNK):
        arrays = [x for _, x in chunk]
        for (path, x), energy in zip(chunk, run_energy_batch(m, arrays)):
            result = score_result(m, energy)
            for i in range(len(x)):
                rows.append({"file": str(path), "index": i if len(x) > 1 else None,
                             **{k: v[i] for k, v in result.items()}})
    if as_json:
        click.echo(json.dumps({"model": m.info.get("name"), "results": rows}, indent=2))
        return
    width = max(len(_label(r)) for r in rows)
    for r in rows:
        calibrated = (f"  tail {r['tail_probability']:9.3g}  "
                      f"{'anomaly' if r['is_anomaly'] else 'normal'}"
                      if "is_anomaly" in r else "")
        click.echo(f"{_label(r):<{width}}  energy {r['energy']:12.4f}  "
                   f"percentile {r['percentile']:6.2f}{calibrated}")


def read_score_inputs(model, inputs: tuple[str, ...], quiet: bool = True):
    """(path, checked float32 array) per input file, decoded as the servers decode a score
    body; an unreadable file stops with an `EbgenError` naming it."""
    from tqdm import tqdm

    from ebgen.errors import EbgenError
    from ebgen.serve.service import decode_score_request
    from ebgen.serve.validation import Limits, RequestError

    files = expand_inputs(inputs)
    if not files:
        raise EbgenError(f"no inputs found in {' '.join(inputs)}: expected files with "
                         f"{', '.join(SUFFIXES)}, folders or globs")
    limits = Limits(max_samples=2**31, max_score_inputs=2**31, max_body_bytes=2**40)
    for path in tqdm(files, unit="file", disable=quiet or None, leave=False):
        try:
            yield path, decode_score_request(path.read_bytes(), model, limits)
        except OSError as err:
            raise EbgenError(f"cannot read {path}: {err.strerror or err}") from None
        except RequestError as err:
            raise EbgenError(f"cannot score {path}: {err.reason}") from None


def _chunks(items, size: int):
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _label(row: dict) -> str:
    return row["file"] if row["index"] is None else f"{row['file']}[{row['index']}]"
