"""Writing generated assets to files."""
from .asset_files import save_generation, save_unique
from .splat_files import load_spz, load_splat, save_splat, save_spz

__all__ = ["save_generation", "save_unique", "save_spz", "load_spz", "save_splat", "load_splat"]
