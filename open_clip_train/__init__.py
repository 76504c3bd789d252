"""Checkout shim so that the seed's ``torchrun -m open_clip_train.main ...`` runs FarSLIP.

Run from the repository root, Python finds this folder before the ``open_clip_train`` package
that ``open_clip_torch`` installs. Extending ``__path__`` over every ``open_clip_train`` folder
on ``sys.path`` keeps the installed submodules (``distributed``, ``scheduler``, ``precision``,
...) importable, while ``open_clip_train.main`` resolves to the ``main.py`` beside this file,
which only hands over to ``farslip.train.main``. Never installed (setup.py ships ``src/`` only).
"""
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
