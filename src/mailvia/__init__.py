"""mailvia: sends a sales team's email through the right delivery channel for each sender."""

__version__ = "0.1.0"
