"""The socket types of the nodes: the pack's own (type strings as released, which saved workflows
and links match) and the core 3D types, the host's own socket classes where it has them."""
from .host import core_socket, io

MODEL = io.Custom("TRELLIS_V1_MODEL")
COND = io.Custom("TRELLIS_V1_COND")
STRUCTURE = io.Custom("TRELLIS_V1_STRUCTURE")
SLAT = io.Custom("TRELLIS_V1_SLAT")
ASSET = io.Custom("TRELLIS_V1_ASSET")
REGION = io.Custom("TRELLIS_V1_REGION")
INVERSION = io.Custom("TRELLIS_V1_INVERSION")

MESH = core_socket("Mesh", "MESH")
VOXEL = core_socket("Voxel", "VOXEL")
SPLAT = core_socket("Splat", "SPLAT")
FILE_3D_GLB = core_socket("File3DGLB", "FILE_3D_GLB")
FILE_3D_SPLAT_ANY = core_socket("File3DSplatAny", "FILE_3D_SPLAT_ANY")
