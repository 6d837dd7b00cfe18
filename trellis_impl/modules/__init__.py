"""Building blocks shared by the TRELLIS models (dense and sparse)."""
