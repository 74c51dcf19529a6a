"""FLAME: model files, landmark embeddings, parameters and the PyTorch layer.

>>> from onflame.flame import load_model, FLAME
>>> model = load_model("generic_model.pkl")          # no chumpy needed
>>> flame = FLAME(model)
>>> out = flame(shape=torch.zeros(1, 300))           # out.vertices: (1, 5023, 3) metres
"""
from .embedding import LandmarkEmbedding, SurfacePoints, load_landmark_embedding, load_masks
from .model import JOINT_NAMES, FlameModel, load_model, load_model_with_assets, save_model
from .params import FlameParams, mica_training_params, params_from_arrays, read_params

__all__ = [
    "FLAME", "FlameOutput", "FlameModel", "FlameParams", "JOINT_NAMES", "LandmarkEmbedding", "SurfacePoints",
    "load_landmark_embedding", "load_masks", "load_model", "load_model_with_assets", "mica_training_params", "params_from_arrays",
    "read_params", "save_model",
]


def __getattr__(name: str):  # the layer needs torch; import it only when asked for
    if name in ("FLAME", "FlameOutput"):
        from . import layer

        return getattr(layer, name)
    raise AttributeError(name)
