"""`server.PromptServer.instance` for packs: Kiln's aiohttp-free bridge (engine/bridge.py)."""
from __future__ import annotations

from engine.bridge import ServerBridge


class PromptServer:
    """Packs only touch `PromptServer.instance` (routes, send_sync, add_on_prompt_handler, ...)."""

    instance: ServerBridge = ServerBridge()
