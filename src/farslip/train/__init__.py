"""FarSLIP training: flags (``args``), the step (``step``), teachers, checkpoints and the loop
(``main``). Entry points: ``farslip train``, ``torchrun -m farslip.train``, and from a
checkout the seed's ``torchrun -m open_clip_train.main``."""
