"""ComfyUI node adapters over trellis_impl (one module per stage). The stage nodes are being
built under the node-pack issue; until then the pack registers no nodes."""
NODE_CLASS_MAPPINGS: dict = {}
NODE_DISPLAY_NAME_MAPPINGS: dict = {}
