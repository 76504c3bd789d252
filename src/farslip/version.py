"""The farslip version, stated once: ``farslip.__version__``, ``farslip --version``, setup.py and the
``farslip_version`` a checkpoint records all read it from here (a module that imports nothing)."""
__version__ = "0.1.0"
