"""``python -m ser COMMAND``: prediction and annotation-store commands."""

import sys

from ser.cli import dispatch

COMMANDS = {
    "predict": ("ser.predict_cli", "predict emotions for audio files or folders"),
    "export": ("ser.export", "export the annotation store as a dataset, CSV or Parquet"),
}

if __name__ == "__main__":
    sys.exit(dispatch("python -m ser", "Speech emotion recognition.", COMMANDS))
