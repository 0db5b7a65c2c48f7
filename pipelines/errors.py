"""The one exception type the CLI turns into a single clear error line."""


class InputError(Exception):
    """Bad user input: a missing path, an unreadable file, an unknown layout.

    The message must name the offending file or value and say what is wrong, e.g.
    ``"clip.mp4: not a readable video (OpenCV could not decode any frame)"``.
    """


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is left as it was."""
