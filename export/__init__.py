"""ebgen.export — ONNX export + parity check, TorchServe archives, model-dir writer.

`export_model(checkpoint, out)` turns a training checkpoint into the self-contained model
directory of design.md §3; `ebgen export` wraps it.
"""
from .archive import HANDLER_FILES, build_archive, check_archive
from .model_dir import energy_quantiles, export_model
from .onnx_export import check_parity, export_onnx

__all__ = ["export_model", "build_archive", "check_archive", "HANDLER_FILES",
           "export_onnx", "check_parity", "energy_quantiles"]
