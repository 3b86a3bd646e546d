"""procedge: distill a student sized for an edge target from a cross-task teacher, fold, export, compile, bench."""

__version__ = "0.1.0"
