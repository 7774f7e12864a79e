"""The list of `ebgen` commands, in the order `ebgen --help` shows them."""
from .eval import eval_command
from .train import train_command

COMMANDS = [train_command, eval_command]
