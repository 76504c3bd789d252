"""Captions generated from a scene's ground truth.

Every sentence is derived from the scene's truth (class, objects, their colours, counts and
positions), so a caption is evidence a model can learn from: scene words for classification,
object words with colours and "upper left"-style positions for retrieval and region alignment.
Four lengths exist because the real data sets have them: ``brief_caption`` (MGRS brief),
``short_caption`` (RS5M-style, a few variants per scene for retrieval), ``detailed_caption``
(counts, colours and positions) and ``long_caption`` (MGRS ``global_caption``, usually longer than
CLIP's 77 tokens).
"""
from __future__ import annotations

from .scene import Scene, SceneObject
from .vocab import NUMBER_WORDS, PLURALS, POSITIONS

# What the ground of each scene class looks like, said in a sentence.
GROUND_SENTENCES: dict[str, str] = {
    "farmland": "The land is divided into parcels of crop fields with parallel stripes in yellow, green "
                "and brown, separated by narrow dirt tracks.",
    "forest": "A dense dark green canopy of trees covers almost all of the land, broken only by a few "
              "small light green clearings.",
    "desert": "Bare orange sand covers the whole area, shaped into long wavy dune ridges with no "
              "vegetation.",
    "lake": "A large irregular blue lake fills the middle of the image, ringed by a narrow sandy shore "
            "and surrounded by green grassland.",
    "river": "A winding blue river with sandy banks flows across green grassland.",
    "residential area": "The neighbourhood is paved in light gray with patches of green lawn between "
                        "the houses.",
    "parking lot": "Dark gray asphalt is marked with rows of white parking bay lines.",
    "storage tanks": "The ground is pale beige concrete of an industrial tank farm.",
    "airport": "A long dark runway with a white dashed centre line crosses dry grass, next to a wide "
               "light gray apron.",
    "harbor": "Open blue water meets a paved gray quay along a straight shoreline.",
}

ARTICLE = {True: "an", False: "a"}


def article(word: str) -> str:
    """'a' or 'an' for a word, by its first letter (enough for this vocabulary)."""
    return ARTICLE[word[0] in "aeiou"]


def number(n: int) -> str:
    """'three' up to twelve, digits above."""
    return NUMBER_WORDS[n] if n < len(NUMBER_WORDS) else str(n)


def scene_name(scene_class: str) -> str:
    """The class with an article where English wants one: 'an airport', but 'storage tanks'."""
    return scene_class if scene_class.endswith("s") else f"{article(scene_class)} {scene_class}"


def noun(category: str, n: int) -> str:
    return category if n == 1 else PLURALS[category]


def position(obj: SceneObject, width: int, height: int) -> str:
    """The 3 x 3 cell ("upper left", "center", ...) holding the visible centre of the object."""
    x1, y1, x2, y2 = max(0, obj.box[0]), max(0, obj.box[1]), min(width, obj.box[2]), min(height, obj.box[3])
    col = min(2, int(3 * (x1 + x2) / 2 / width))
    row = min(2, int(3 * (y1 + y2) / 2 / height))
    return POSITIONS[3 * row + col]


def coloured(category: str, colour: str) -> str:
    """'red-roofed building', 'white car', 'green tennis court'; plain names where colour is implied."""
    if category == "building":
        return f"{colour}-roofed"
    if category in ("tree", "road", "swimming pool"):
        return ""
    return colour


def _groups(scene: Scene) -> list[tuple[str, list[SceneObject]]]:
    """Objects grouped by category, the most numerous first (ties by category name)."""
    by_cat: dict[str, list[SceneObject]] = {}
    for o in scene.objects:
        by_cat.setdefault(o.category, []).append(o)
    return sorted(by_cat.items(), key=lambda kv: (-len(kv[1]), kv[0]))


def _counted(category: str, members: list[SceneObject]) -> str:
    """'three red-roofed buildings' (a colour only when all share it), 'a road'."""
    n = len(members)
    colours = {o.colour for o in members}
    adjective = coloured(category, members[0].colour) if len(colours) == 1 else ""
    words = " ".join(w for w in (adjective, noun(category, n)) if w)
    return f"{article(words)} {words}" if n == 1 else f"{number(n)} {words}"


def _join(parts: list[str]) -> str:
    if len(parts) <= 1:
        return "".join(parts)
    return ", ".join(parts[:-1]) + " and " + parts[-1]


def _where(members: list[SceneObject], width: int, height: int) -> str:
    places = sorted({position(o, width, height) for o in members}, key=POSITIONS.index)
    if len(places) > 4:
        return "scattered across the image"
    return "in the " + _join(places)


def brief_caption(scene: Scene) -> str:
    """'a harbor with ships and storage tanks.'"""
    groups = _groups(scene)[:2]
    base = scene_name(scene.scene_class)
    if not groups:
        return base + "."
    return f"{base} with " + _join([PLURALS[c] if len(m) > 1 else f"{article(c)} {c}" for c, m in groups]) + "."


def short_caption(scene: Scene, variant: int = 0) -> str:
    """One sentence naming the scene class and its main objects with counts and colours;
    ``variant`` picks one of three phrasings (several captions per image for retrieval)."""
    groups = _groups(scene)[:3]
    what = _join([_counted(c, m) for c, m in groups])
    name = scene_name(scene.scene_class)
    variant %= 3
    if variant == 0:
        return f"a satellite image of {name}" + (f" with {what}." if what else ".")
    if variant == 1:
        if not groups:
            return f"an aerial view of {name} without any objects."
        c, m = groups[0]
        return f"an aerial view of {name} with {_counted(c, m)} {_where(m, scene.width, scene.height)}."
    text = f"{name} with {what}, seen from above." if what else f"{name} seen from above."
    return text[0].upper() + text[1:]


def detailed_caption(scene: Scene) -> str:
    """Scene class and ground, then one sentence per object category: count, colour, position."""
    sentences = [f"This satellite image shows {scene_name(scene.scene_class)}.",
                 GROUND_SENTENCES[scene.scene_class]]
    for category, members in _groups(scene):
        where = _where(members, scene.width, scene.height)
        counted = _counted(category, members)
        verb = "is" if len(members) == 1 else "are"
        sentences.append(f"There {verb} {counted} {where}.")
    if not scene.objects:
        sentences.append("No buildings, vehicles or other man-made objects are visible.")
    return " ".join(sentences)


def _instance_sentence(category: str, members: list[SceneObject], width: int, height: int) -> str:
    """'The buildings are a red-roofed one in the upper left, a blue-roofed one in the center.'"""
    parts = []
    for o in members[:6]:
        adjective = coloured(category, o.colour)
        one = f"{article(adjective)} {adjective} one" if adjective else "one"
        parts.append(f"{one} in the {position(o, width, height)}")
    more = f", and {number(len(members) - 6)} more" if len(members) > 6 else ""
    return f"The {PLURALS[category]} are " + _join(parts) + more + "."


def long_caption(scene: Scene) -> str:
    """The MGRS-style global caption: the detailed caption plus every instance with its colour
    and position, the largest object and an object count; usually over 77 CLIP tokens."""
    w, h = scene.width, scene.height
    sentences = [f"This is a high-resolution satellite image of {scene_name(scene.scene_class)}, "
                 f"{w} by {h} pixels, seen from directly above.",
                 GROUND_SENTENCES[scene.scene_class]]
    for category, members in _groups(scene):
        verb = "is" if len(members) == 1 else "are"
        sentences.append(f"There {verb} {_counted(category, members)} "
                         f"{_where(members, w, h)}.")
        if len(members) > 1 and coloured(category, members[0].colour):
            sentences.append(_instance_sentence(category, members, w, h))
    if scene.objects:
        def area(o: SceneObject) -> int:
            return (o.box[2] - o.box[0]) * (o.box[3] - o.box[1])
        big = max(scene.objects, key=area)
        sentences.append(f"The largest object is the {big.category} in the {position(big, w, h)}.")
        n = len(scene.objects)
        sentences.append(f"In total the scene contains {number(n)} annotated "
                         f"{'object' if n == 1 else 'objects'}.")
    else:
        sentences.append("No buildings, vehicles, ships or other man-made objects are visible "
                         "anywhere in the scene; it is an untouched natural landscape seen from above, "
                         "with nothing to annotate.")
    return " ".join(sentences)


def region_caption(obj: SceneObject, width: int, height: int) -> str:
    """Free-text description of one object (the MGRS ``cap`` form): 'a white ship in the top'."""
    adjective = coloured(obj.category, obj.colour)
    words = " ".join(w for w in (adjective, obj.category) if w)
    return f"{article(words)} {words} in the {position(obj, width, height)}"
