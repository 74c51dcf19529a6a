"""A small headless CPU renderer: z-buffered triangles, texture or vertex colour, Lambert light.

>>> from onflame.render import framing, render_mesh
>>> cam = framing(vertices, facing=[0, 0, 1], up=[0, 1, 0], size=512)   # orthographic by default
>>> r = render_mesh(vertices, faces, cam)                                # skin-coloured, shaded
>>> r.image                     # (512, 512, 3) uint8 RGB
>>> points, hit = r.lift(pixels_xy)                                      # pixels back onto the surface

Used to show scans to a 2D face detector (automatic 3D landmarks) and to draw registration reports.

Why hand-written: no pip-installable renderer fits. pyrender, moderngl, vispy and Open3D's offscreen
renderer need an OpenGL/EGL (or OSMesa) context, which headless CI machines and containers do not
have without system packages; pytorch3d publishes no CPU wheel for the torch this project uses (it
must be built from source); nvdiffrast needs CUDA. The job here is small (a few hundred thousand
triangles into a 512-pixel image, a few times per scan), and a vectorised numpy rasterizer does it in a
fraction of a second while also giving per-pixel triangle and barycentric ids, which lifting 2D
landmarks onto the surface needs and image-only renderers do not return.
"""
from .camera import Camera, framing, look_at
from .raster import Fragments, rasterize
from .renderer import DEFAULT_LIGHTS, Rendering, render_mesh
from .shading import SKIN_ALBEDO, colormap, lambert, load_texture, sample_texture

__all__ = [
    "Camera", "DEFAULT_LIGHTS", "Fragments", "Rendering", "SKIN_ALBEDO", "colormap", "framing", "lambert",
    "load_texture", "look_at", "rasterize", "render_mesh", "sample_texture",
]
