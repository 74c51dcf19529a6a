"""FaceWarehouse (MICA subset ``FACEWAREHOUSE``).

Layout read (the release's own)::

    <raw>/Tester_<n>/TrainingPose/pose_0.obj    neutral pose, FaceWarehouse topology (11,510 vertices, quads)
    <raw>/Tester_<n>/TrainingPose/pose_0.land   its 74 landmarks, image points in pose_0.png
    <raw>/Tester_<n>/TrainingPose/pose_<k>.png  Kinect colour photos of the 20 poses (k = 0..19)

(``Tester_<n>`` folders may sit one level deeper, e.g. under ``FaceWarehouse_Data_0/``.) MICA's subject
is pose 0: ``Tester_1/pose_0.npz``; its image list holds the 20 pose photos. The meshes carry texture
coordinates but no texture image. The release states no unit: :meth:`ScanItem.to_flame_frame` detects it
from the mesh's size. Axes are taken to be FLAME's (+y up, face +z).
"""
from __future__ import annotations

from pathlib import Path

from .base import ScanItem, Source, images_in

NEUTRAL_POSE = "pose_0"


def _find(raw: Path, source: Source) -> list[ScanItem]:
    items = []
    for obj in sorted(raw.rglob(f"{NEUTRAL_POSE}.obj")):
        pose_dir = obj.parent
        if pose_dir.name != "TrainingPose" or not pose_dir.parent.name.startswith("Tester_"):
            continue
        land = obj.with_suffix(".land")
        photos = images_in(pose_dir, "pose_*.png")
        items.append(source.item(pose_dir.parent.name, NEUTRAL_POSE, obj, photos, land if land.is_file() else None))
    return items


SOURCE = Source("FACEWAREHOUSE", "FaceWarehouse", units=None, finder=_find, texture_expected=False,
                layout="Tester_<n>/TrainingPose/pose_0.obj (+ pose_0.land, pose_<k>.png)")
