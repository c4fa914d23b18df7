"""Entry point of the app, locally (`python app.py --help`) and as a Hugging Face Space's app_file."""

import sys

from ser.model import ModelLoadError
from ser.store import StoreError
from ser.ui import build_app, launch_options, parse_config
from ser.ui.config import apply_analytics_setting


def main() -> int:
    config = parse_config()
    apply_analytics_setting(config)  # before the page is built: Gradio reads it then
    try:
        app = build_app(config)
    except (ModelLoadError, StoreError) as error:  # e.g. a read-only store: say so, no traceback
        print(f"error: {error}", file=sys.stderr)
        return 2
    # --- issue #18: serve the page and the HTTP API (ser.http_api, POST /api/v1/predict) on one server.
    if config.share:  # a gradio.live link needs Blocks.launch, which cannot add routes: page only
        app.launch(**launch_options(config))
    else:
        from ser.http_api import serve

        serve(app, config, **launch_options(config))
    # --- end issue #18
    return 0


if __name__ == "__main__":
    sys.exit(main())
