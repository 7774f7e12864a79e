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
    [-1, 1]), JSON score requests, folders (searched recursively) or globs. One line per
    sample: the percentile is among the training data's energies (higher = less typical).
    An unreadable input stops with exit code 2, naming the file.

    \b
    Examples:
      ebgen score models/tiny digit.png
      ebgen score models/mnist tests/images/ 'more/*.png' --json
    """
    from tqdm import tqdm

    from ebgen.errors import EbgenError
    from ebgen import load_model
    from ebgen.serve.service import decode_score_request, run_energy_batch, score_result
    from ebgen.serve.validation import Limits, RequestError

    files = expand_inputs(inputs)
    if not files:
        raise EbgenError(f"no inputs found in {' '.join(inputs)}: expected files with "
                         f"{', '.join(SUFFIXES)}, folders or globs")
    m = load_model(model, device)
    limits = Limits(max_samples=2**31, max_score_inputs=2**31, max_body_bytes=2**40)
    rows: list[dict] = []
    bar = tqdm(total=len(files), unit="file", disable=quiet or None, leave=False)
    for start in range(0, len(files), CHUNK):
        chunk, arrays = files[start:start + CHUNK], []
        for path in chunk:
            try:
                arrays.append(decode_score_request(path.read_bytes(), m, limits))
            except OSError as err:
                raise EbgenError(f"cannot read {path}: {err.strerror or err}") from None
            except RequestError as err:
                raise EbgenError(f"cannot score {path}: {err.reason}") from None
        for path, x, energy in zip(chunk, arrays, run_energy_batch(m, arrays)):
            result = score_result(m, energy)
            for i in range(len(x)):
                rows.append({"file": str(path), "index": i if len(x) > 1 else None,
                             **{k: v[i] for k, v in result.items()}})
        bar.update(len(chunk))
    bar.close()
    if as_json:
        click.echo(json.dumps({"model": m.info.get("name"), "results": rows}, indent=2))
        return
    width = max(len(_label(r)) for r in rows)
    for r in rows:
        click.echo(f"{_label(r):<{width}}  energy {r['energy']:12.4f}  "
                   f"percentile {r['percentile']:6.2f}")


def _label(row: dict) -> str:
    return row["file"] if row["index"] is None else f"{row['file']}[{row['index']}]"
