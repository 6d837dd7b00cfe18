"""Writing generated assets to files."""
from .asset_files import save_generation, save_unique

__all__ = ["save_generation", "save_unique"]
