"""The synthetic remote-sensing world: procedural scenes with full ground truth, written in every
real data format (``farslip synth``; not part of the library the trainer and evaluator need).

``vocab`` holds the label spaces, ``textures`` the land-cover grounds, ``objects`` the object
shapes, ``canvas`` the aligned image/mask layers, ``scene`` the per-class layouts and
``render_scene``, ``captions`` the texts derived from the truth, ``layouts`` what the world adds
to the evaluation registry's layouts (label spellings, the OVSS class mappings), ``writers`` the
deterministic file encoders and ``world`` the whole world on disk (``write_world``) and the
``farslip synth`` command.

    from farslip.synth import write_world
    paths = write_world("out/world", seed=0, scale="small")
"""
from .scene import Scene, SceneObject, render_scene
from .vocab import LAND_COVERS, OBJECT_CATEGORIES, SCENE_CLASSES, SEMANTIC_CLASSES
from .world import SCALES, Scale, write_world

__all__ = ["LAND_COVERS", "OBJECT_CATEGORIES", "SCALES", "SCENE_CLASSES", "SEMANTIC_CLASSES", "Scale", "Scene",
           "SceneObject", "render_scene", "write_world"]
