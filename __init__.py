"""ComfyUI entry point of the TRELLIS node pack (V3 schema: ``comfy_entrypoint``, no
``NODE_CLASS_MAPPINGS``; nodes/__init__.py says why).

The nodes are imported when ComfyUI calls the entry point, right after importing this module, not
when the module is imported: they subclass the host's ``io.ComfyNode``, and this module stays
importable outside ComfyUI (pytest imports it as the package of the tests).
"""
import logging

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    try:
        from .nodes import TrellisExtension
    except Exception:  # the host logs only the message; the traceback is what a bug report needs
        logging.getLogger(__name__).exception("[trellis] the TRELLIS nodes could not be imported")
        raise
    return TrellisExtension()


__all__ = ["comfy_entrypoint", "WEB_DIRECTORY"]
