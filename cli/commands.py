"""The list of `ebgen` commands, in the order `ebgen --help` shows them."""
from .calibrate import calibrate_command
from .eval import eval_command
from .export import export_command
from .fit_density import fit_density_command
from .generate import generate_command
from .models import models_command
from .score import score_command
from .serve import serve_command
from .train import train_command

COMMANDS = [train_command, fit_density_command, eval_command, export_command, generate_command,
            score_command, calibrate_command, serve_command, models_command]
