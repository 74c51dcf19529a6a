"""Meshes: the :class:`Mesh` type and its readers and writers."""
from .io import MESH_SUFFIXES, check_mesh, read_mesh, read_obj, write_obj
from .mesh import Mesh
from .ply import read_ply, write_ply

__all__ = ["MESH_SUFFIXES", "Mesh", "check_mesh", "read_mesh", "read_obj", "read_ply", "write_obj", "write_ply"]
