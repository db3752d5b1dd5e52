"""`python -m network_expansion`: the `network-expansion` command."""

from .cli import run

run()
