"""``computectl``: the command line for operators and scripts."""
