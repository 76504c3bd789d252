"""Procedural remote-sensing scenes with full ground truth (the engine of ``farslip synth``).

``vocab`` holds the label spaces, ``textures`` the land-cover grounds, ``objects`` the object
shapes, ``canvas`` the aligned image/mask layers, ``scene`` the per-class layouts and
``render_scene``, ``captions`` the texts derived from the truth, ``layouts`` the on-disk layout of
each imitated data set and ``writers`` the deterministic file encoders.
"""
from .scene import Scene, SceneObject, render_scene
from .vocab import LAND_COVERS, OBJECT_CATEGORIES, SCENE_CLASSES, SEMANTIC_CLASSES

__all__ = ["LAND_COVERS", "OBJECT_CATEGORIES", "SCENE_CLASSES", "SEMANTIC_CLASSES", "Scene", "SceneObject",
           "render_scene"]
