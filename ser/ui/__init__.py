"""The Gradio app: ``build_app(config)`` builds the page, ``launch_options(config)`` says how to serve it."""

from ser.ui.app import build_app, launch_options
from ser.ui.config import AppConfig, parse_config

__all__ = ["AppConfig", "build_app", "launch_options", "parse_config"]
