"""Who may do what on a public page: viewer, annotator, admin.

Every Gradio endpoint can be called directly by anyone who can reach the page, so each handler
asks here, on the server, before it acts; hiding a button is never the protection.

- **viewer**: the Demo tab, and their own corrections (save, undo, delete).
- **annotator**: also the Annotate tab's queues (next, save, skip, undo their own labels), and
  queueing clips they upload.
- **admin**: also retraining, adopting a candidate, switching and rolling back the serving model,
  queueing clips from server folders (``--data-root``), queueing Demo clips, deleting others' data.

With ``--auth`` roles come from configuration: ``--admins`` are admins, ``--annotators`` (default:
every login) annotate, other logins view. Without auth everyone may annotate under a typed name,
and admin actions are off unless ``SER_ADMIN_TOKEN`` is set; typing that token in the page makes
that one request an admin's.
"""

from __future__ import annotations

import hmac
from enum import IntEnum

import gradio as gr

from ser.ui.config import AppConfig


class Role(IntEnum):
    VIEWER = 0
    ANNOTATOR = 1
    ADMIN = 2


def login_of(request: gr.Request | None) -> str | None:
    """The logged-in user's name, or None without auth."""
    name = getattr(request, "username", None) if request is not None else None
    return str(name) if name else None


def token_matches(config: AppConfig, token: str | None) -> bool:
    """Constant-time comparison with ``SER_ADMIN_TOKEN``; never true when no token is configured."""
    if not config.admin_token or not token:
        return False
    return hmac.compare_digest(str(token).encode(), config.admin_token.encode())


def role_of(config: AppConfig, request: gr.Request | None, token: str | None = None) -> Role:
    """The role of the person behind ``request`` (``token``: what they typed in an admin-token box)."""
    if token_matches(config, token):
        return Role.ADMIN
    login = login_of(request)
    if login is None:
        return Role.ANNOTATOR if not config.auth else Role.VIEWER
    if login in config.admins:
        return Role.ADMIN
    if not config.annotators or login in config.annotators:
        return Role.ANNOTATOR
    return Role.VIEWER


def admin_hint(config: AppConfig) -> str:
    if config.auth:
        return "log in with an account listed in --admins (SER_ADMINS)"
    if config.admin_token:
        return "type the admin token (the SER_ADMIN_TOKEN secret) in the 'Admin token' box"
    return "admin actions are off on this server: its owner enables them with --auth and --admins, or SER_ADMIN_TOKEN"


def require(config: AppConfig, request: gr.Request | None, needed: Role, action: str, token: str | None = None) -> Role:
    """Raise a ``gr.Error`` that says who may do ``action`` unless the caller's role is at least ``needed``."""
    role = role_of(config, request, token)
    if role >= needed:
        return role
    if needed is Role.ADMIN:
        raise gr.Error(f"Only an admin can {action}: {admin_hint(config)}.")
    raise gr.Error(f"Only annotators can {action}: ask the server's owner to add your login to --annotators.")
