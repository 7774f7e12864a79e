"""ONNX input/output names and artefact file names, defined once.

Exporters, runtimes, handlers and servers all import these; none spells them out itself.
"""

#: generator.onnx: latent in, image (or 2-D point) out.
GENERATOR_INPUT = "z"
GENERATOR_OUTPUT = "x"
#: generator_uint8.onnx: same input, uint8 pixels out.
GENERATOR_UINT8_OUTPUT = "pixels"
#: energy.onnx: sample in, energy per sample out.
ENERGY_INPUT = "x"
ENERGY_OUTPUT = "energy"
#: latent_potential.onnx: the normal variable u behind a latent in, refinement's potential
#: U(u) = E(G(z(u))) + ‖u‖²/2 and its gradient out (`ebgen.refine`).
POTENTIAL_INPUT = "u"
POTENTIAL_OUTPUT = "potential"
POTENTIAL_GRAD_OUTPUT = "potential_grad"
#: What scoring returns per sample (`score`, the v2 energy model's outputs, in this order).
LOG_DENSITY = "log_density"       # −energy − log Z (log Z from `export --log-z`, else 0)
PERCENTILE = "percentile"         # 0–100 among the training data's energies
SCORE_OUTPUTS = (ENERGY_OUTPUT, LOG_DENSITY, PERCENTILE)
#: ... and, once the model is calibrated (`ebgen calibrate`), these two after them.
TAIL_PROBABILITY = "tail_probability"  # P(E ≥ e) for clean data (a fitted tail past its end)
IS_ANOMALY = "is_anomaly"              # energy above the calibrated threshold
CALIBRATED_OUTPUTS = (TAIL_PROBABILITY, IS_ANOMALY)
#: The named dynamic axis of every ONNX input and output.
BATCH_AXIS = "batch"

# Checkpoint directory (ebgen train).
CONFIG_FILE = "config.json"
ENERGY_WEIGHTS = "energy.safetensors"
GENERATOR_WEIGHTS = "generator.safetensors"
TRAINER_STATE = "trainer_state.pt"
METRICS_FILE = "metrics.jsonl"
SAMPLES_DIR = "samples"

# Model directory (ebgen export).
MODEL_FILE = "model.json"
GENERATOR_ONNX = "generator.onnx"
GENERATOR_UINT8_ONNX = "generator_uint8.onnx"
ENERGY_ONNX = "energy.onnx"
LATENT_POTENTIAL_ONNX = "latent_potential.onnx"
CALIBRATION_FILE = "calibration.json"  # `ebgen calibrate`: threshold and tail (optional)
TORCH_DIR = "torch"                    # the PyTorch weights and config (`ebgen.load_torch`)

# TorchServe archives (ebgen export): one per kind, also its TorchServe model name, each with
# the ebgen.serve handler module of that name.
ARCHIVE_KINDS = ("generate", "score")
HANDLER_MODULES = {kind: f"ts_{kind}.py" for kind in ARCHIVE_KINDS}

# Bundled pretrained models (ebgen/pretrained/<name>/): a model directory plus these two.
RECIPE_FILE = "recipe.json"       # how it was trained: command, config, seconds
QUALITY_FILE = "quality.json"     # what it measured: `ebgen eval` metrics
